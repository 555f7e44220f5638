// RUN: ember-opt %s -p onnx-shape-inference | filecheck %s
// Dynamic result types become static from static inputs.

builtin.module attributes {onnx.ir_version = 8 : i64, onnx.opset_import = {"" = 13 : i64}} {
  func.func @g(%x: tensor<1x3x32x32xf32> {onnx.name = "x"}) -> tensor<?x?x?x?xf32> attributes {onnx.output_names = ["p"]} {
    %w = onnx.initializer "w" = dense<1.0> : tensor<8x3x3x3xf32>
    %c = onnx.Conv(%x, %w) {strides = array<i64: 2, 2>, pads = array<i64: 1, 1, 1, 1>, onnx_outputs = ["c"]} : (tensor<1x3x32x32xf32>, tensor<8x3x3x3xf32>) -> tensor<?x?x?x?xf32>
    %p = onnx.MaxPool(%c) {kernel_shape = array<i64: 2, 2>, strides = array<i64: 2, 2>, onnx_outputs = ["p"]} : (tensor<?x?x?x?xf32>) -> tensor<?x?x?x?xf32>
    func.return %p : tensor<?x?x?x?xf32>
  }
}

// CHECK: func.func @g(%{{.*}}: tensor<1x3x32x32xf32> {onnx.name = "x"}) -> tensor<1x8x8x8xf32>
// CHECK: onnx.Conv({{.*}}) -> tensor<1x8x16x16xf32>
// CHECK: onnx.MaxPool({{.*}} : (tensor<1x8x16x16xf32>) -> tensor<1x8x8x8xf32>
