// RUN: ember-opt %s -p 'crop{inputs="t" outputs="c"}' | filecheck %s
// RUN: not ember-opt %s -p 'crop{inputs="t" outputs="missing"}' 2>&1 | filecheck %s --check-prefix=ERR
// The graph splits at the named tensors into main (first), pre and post functions; weights
// go with the part that reads them; the boundary is recorded on the module.

builtin.module attributes {onnx.ir_version = 8 : i64, onnx.opset_import = {"" = 17 : i64}} {
  func.func @g(%x: tensor<1x4x4x2xf32> {onnx.name = "x"}) -> tensor<1x2x16xf32> attributes {onnx.output_names = ["y"]} {
    %t = onnx.Transpose(%x) {perm = array<i64: 0, 3, 1, 2>, onnx_outputs = ["t"]} : (tensor<1x4x4x2xf32>) -> tensor<1x2x4x4xf32>
    %w = onnx.initializer "w" = dense<1.0> : tensor<2x2x1x1xf32>
    %c = onnx.Conv(%t, %w) {onnx_outputs = ["c"]} : (tensor<1x2x4x4xf32>, tensor<2x2x1x1xf32>) -> tensor<1x2x4x4xf32>
    %s = onnx.initializer "shape" = dense<[1, 2, 16]> : tensor<3xi64>
    %r = onnx.Reshape(%c, %s) {onnx_outputs = ["r"]} : (tensor<1x2x4x4xf32>, tensor<3xi64>) -> tensor<1x2x16xf32>
    %y = onnx.Softmax(%r) {axis = -1 : i64, onnx_outputs = ["y"]} : (tensor<1x2x16xf32>) -> tensor<1x2x16xf32>
    func.return %y : tensor<1x2x16xf32>
  }
}

// CHECK:      builtin.module attributes {{{.*}}onnx.crop = {inputs = ["t"], outputs = ["c"]}}
// CHECK-NEXT:   func.func @g(%{{.*}}: tensor<1x2x4x4xf32> {onnx.name = "t"}) -> tensor<1x2x4x4xf32> attributes {onnx.output_names = ["c"], onnx.part = "main"}
// CHECK-NEXT:     onnx.initializer "w"
// CHECK-NEXT:     onnx.Conv
// CHECK-NEXT:     func.return
// CHECK:      func.func @g_pre(%{{.*}}: tensor<1x4x4x2xf32> {onnx.name = "x"}) -> tensor<1x2x4x4xf32> attributes {onnx.output_names = ["t"], onnx.part = "pre"}
// CHECK-NEXT:     onnx.Transpose
// CHECK-NEXT:     func.return
// CHECK:      func.func @g_post(%{{.*}}: tensor<1x2x4x4xf32> {onnx.name = "c"}) -> tensor<1x2x16xf32> attributes {onnx.output_names = ["y"], onnx.part = "post"}
// CHECK-NEXT:     onnx.initializer "shape"
// CHECK-NEXT:     onnx.Reshape
// CHECK-NEXT:     onnx.Softmax
// CHECK-NEXT:     func.return

// ERR: ember-opt: error: crop: tensor 'missing' is not a non-constant tensor of the graph; check the name in the IR (ember-opt model.onnx --elide-weights)
