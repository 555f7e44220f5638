// RUN: ember-opt %s -p extract-normalization 2>&1 | filecheck %s
// RUN: ember-opt %s -p 'extract-normalization{strip_transpose=true remarks=false}' | filecheck %s --check-prefix=STRIP
// uint8 NHWC -> Cast -> Transpose -> Sub(mean) -> Div(std): the affine part is stripped and
// recorded on the input; the layout Transpose stays unless strip_transpose=true.

builtin.module attributes {onnx.ir_version = 8 : i64, onnx.opset_import = {"" = 17 : i64}} {
  func.func @g(%x: tensor<1x4x4x3xui8> {onnx.name = "image"}) -> tensor<1x3x4x4xf32> attributes {onnx.output_names = ["y"]} {
    %f = onnx.Cast(%x) {to = 1 : i64, onnx_outputs = ["f"]} : (tensor<1x4x4x3xui8>) -> tensor<1x4x4x3xf32>
    %t = onnx.Transpose(%f) {perm = array<i64: 0, 3, 1, 2>, onnx_outputs = ["t"]} : (tensor<1x4x4x3xf32>) -> tensor<1x3x4x4xf32>
    %mean = onnx.initializer "mean" = dense<[[[127.5]], [[64.0]], [[32.0]]]> : tensor<3x1x1xf32>
    %std = onnx.initializer "std" = dense<[[[2.0]], [[4.0]], [[0.5]]]> : tensor<3x1x1xf32>
    %c = onnx.Sub(%t, %mean) {onnx_outputs = ["c"]} : (tensor<1x3x4x4xf32>, tensor<3x1x1xf32>) -> tensor<1x3x4x4xf32>
    %n = onnx.Div(%c, %std) {onnx_outputs = ["n"]} : (tensor<1x3x4x4xf32>, tensor<3x1x1xf32>) -> tensor<1x3x4x4xf32>
    %y = onnx.Relu(%n) {onnx_outputs = ["y"]} : (tensor<1x3x4x4xf32>) -> tensor<1x3x4x4xf32>
    func.return %y : tensor<1x3x4x4xf32>
  }
}

// CHECK: extract-normalization: normalization1 = normalization([127.5, 64.0, 32.0], [2.0, 4.0, 0.5])
// CHECK:      func.func @g(%[[X:.*]]: tensor<1x4x4x3xf32> {onnx.name = "image", onnx.normalization = {mean = [1.275000e+02 : f64, 6.400000e+01 : f64, 3.200000e+01 : f64], std = [2.000000e+00 : f64, 4.000000e+00 : f64, 5.000000e-01 : f64], axis = 3 : i64}})
// CHECK-NEXT:   %[[T:.*]] = onnx.Transpose(%[[X]]) {perm = array<i64: 0, 3, 1, 2>, onnx_outputs = ["t"]} : (tensor<1x4x4x3xf32>) -> tensor<1x3x4x4xf32>
// CHECK-NEXT:   %{{.*}} = onnx.Relu(%[[T]])
// CHECK-NOT: onnx.Cast
// CHECK-NOT: onnx.Sub

// STRIP:      func.func @g(%[[X:.*]]: tensor<1x3x4x4xf32> {onnx.name = "image", onnx.normalization = {{{.*}}axis = 1 : i64}})
// STRIP-NEXT:   %{{.*}} = onnx.Relu(%[[X]])
// STRIP-NEXT:   func.return
