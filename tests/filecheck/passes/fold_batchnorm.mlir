// RUN: ember-opt %s -p 'fold-batchnorm{remarks=true}' 2>&1 | filecheck %s
// RUN: ember-opt %shared/models/ppocr_mobile_v2_cls.onnx --input-shape x=1,3,48,192 -p fold-batchnorm --elide-weights | filecheck %s --check-prefix=REAL
// Conv -> BN folds backward into one Conv with new weights named after the BN's output;
// a BN after a Relu cannot fold and becomes Mul + Add by per-channel constants.

builtin.module attributes {onnx.ir_version = 8 : i64, onnx.opset_import = {"" = 17 : i64}} {
  func.func @g(%x: tensor<1x2x4x4xf32> {onnx.name = "x"}) -> tensor<1x2x4x4xf32> attributes {onnx.output_names = ["y"]} {
    %w = onnx.initializer "w" = dense<[[[[1.0]], [[0.0]]], [[[0.0]], [[1.0]]]]> : tensor<2x2x1x1xf32>
    %gamma = onnx.initializer "gamma" = dense<[2.0, 4.0]> : tensor<2xf32>
    %beta = onnx.initializer "beta" = dense<[1.0, -1.0]> : tensor<2xf32>
    %mean = onnx.initializer "mean" = dense<[0.5, 0.0]> : tensor<2xf32>
    %var = onnx.initializer "var" = dense<[1.0, 4.0]> : tensor<2xf32>
    %c = onnx.Conv(%x, %w) {onnx_node = "conv", onnx_outputs = ["c"]} : (tensor<1x2x4x4xf32>, tensor<2x2x1x1xf32>) -> tensor<1x2x4x4xf32>
    %b = onnx.BatchNormalization(%c, %gamma, %beta, %mean, %var) {epsilon = 0.0 : f32, onnx_node = "bn1", onnx_outputs = ["b"]} : (tensor<1x2x4x4xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>) -> tensor<1x2x4x4xf32>
    %r = onnx.Relu(%b) {onnx_node = "relu", onnx_outputs = ["r"]} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
    %y = onnx.BatchNormalization(%r, %gamma, %beta, %mean, %var) {epsilon = 0.0 : f32, onnx_node = "bn2", onnx_outputs = ["y"]} : (tensor<1x2x4x4xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>) -> tensor<1x2x4x4xf32>
    func.return %y : tensor<1x2x4x4xf32>
  }
}

// CHECK: fold-batchnorm: BatchNormalization 'bn1': folded into Conv 'conv'
// CHECK: fold-batchnorm: BatchNormalization 'bn2': not folded (backward: its input comes from Relu 'relu', not from Conv, ConvTranspose, Gemm or MatMul; forward: its output is a graph output); became Mul + Add
// CHECK-NOT: onnx.BatchNormalization
// s = gamma / sqrt(var) = [2, 2]; W' = s W; b' = beta - s mean = [0, -1]
// CHECK:      onnx.initializer "b.bnfold_weight" = dense<"0x00000040000000000000000000000040"> : tensor<2x2x1x1xf32>
// CHECK-NEXT: onnx.initializer "b.bnfold_bias" = dense<"0x00000000000080BF"> : tensor<2xf32>
// CHECK-NEXT: %[[C:.*]] = onnx.Conv(%x, %{{.*}}, %{{.*}}) {onnx_node = "conv", onnx_outputs = ["b"]}
// CHECK-NEXT: %[[R:.*]] = onnx.Relu(%[[C]])
// CHECK:      onnx.initializer "y.bn_scale" = dense<"0x0000004000000040"> : tensor<2x1x1xf32>
// CHECK-NEXT: onnx.initializer "y.bn_shift" = dense<"0x00000000000080BF"> : tensor<2x1x1xf32>
// CHECK-NEXT: %[[M:.*]] = onnx.Mul(%[[R]], %{{.*}}) {onnx_node = "bn2.scale", onnx_outputs = ["y.bn_scaled"]}
// CHECK-NEXT: %[[A:.*]] = onnx.Add(%[[M]], %{{.*}}) {onnx_node = "bn2.shift", onnx_outputs = ["y"]}
// CHECK-NEXT: func.return %[[A]]
// CHECK-NOT: onnx.initializer "gamma"

// REAL-NOT: onnx.BatchNormalization
// REAL: onnx.initializer "batch_norm_0.tmp_2.bnfold_weight" = dense_resource<__elided__> : tensor<8x3x3x3xf32>
// REAL-NOT: onnx.BatchNormalization
