// RUN: ember-opt %s | filecheck %s
// RUN: ember-opt %s | ember-opt | filecheck %s
// The custom syntax round-trips: operands by position, `none` for an absent optional
// input, ONNX attributes as properties, tensor names kept.

builtin.module attributes {onnx.ir_version = 8 : i64, onnx.opset_import = {"" = 17 : i64}} {
  func.func @g(%x: tensor<1x3x8x8xf32> {onnx.name = "input:0"}) -> tensor<1x4x8x8xf32> attributes {onnx.output_names = ["y"]} {
    %w = onnx.initializer "conv.w" = dense<"0x0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F0000803F"> : tensor<4x3x1x1xf32>
    %c = onnx.Conv(%x, %w) {group = 1 : i64, pads = array<i64: 0, 0, 0, 0>, onnx_node = "Conv_0", onnx_outputs = ["/conv/Conv_output_0"]} : (tensor<1x3x8x8xf32>, tensor<4x3x1x1xf32>) -> tensor<1x4x8x8xf32>
    %s = onnx.initializer "scales" = dense<[1.0, 1.0, 1.0, 1.0]> : tensor<4xf32>
    %r = onnx.Resize(%c, none, %s) {mode = "nearest", onnx_outputs = ["y"]} : (tensor<1x4x8x8xf32>, tensor<4xf32>) -> tensor<1x4x8x8xf32>
    func.return %r : tensor<1x4x8x8xf32>
  }
}

// CHECK: func.func @g(%{{.*}}: tensor<1x3x8x8xf32> {onnx.name = "input:0"})
// CHECK: onnx.initializer "conv.w" = dense<"0x0000803F
// CHECK: onnx.Conv(%{{.*}}, %{{.*}}) {group = 1 : i64, pads = array<i64: 0, 0, 0, 0>, onnx_node = "Conv_0", onnx_outputs = ["/conv/Conv_output_0"]} : (tensor<1x3x8x8xf32>, tensor<4x3x1x1xf32>) -> tensor<1x4x8x8xf32>
// CHECK: onnx.Resize(%{{.*}}, none, %{{.*}}) {mode = "nearest", onnx_outputs = ["y"]}
