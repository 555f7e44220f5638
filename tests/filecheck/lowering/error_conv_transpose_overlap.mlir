// RUN: not ember-opt %s -p 'lower-quant-to-npu{arch=ember16}' 2>&1 | filecheck %s
// A float node left in the function the NPU runs is checked against the capability
// table: an overlapping ConvTranspose (kernel 3 > stride 2) is named with the reason and
// the way out, autocrop.

builtin.module {
  func.func @main(%x: tensor<1x4x2x2x!quant.uniform<i8:f32, 0.1>> {onnx.name = "x"}) -> tensor<1x3x5x5x!quant.uniform<i8:f32, 0.2>> attributes {onnx.output_names = ["y"]} {
    %w = onnx.initializer "w" = dense<1.0> : tensor<4x3x3x3xf32>
    %f = quant.dequantize %x {onnx_node = "dq"} : tensor<1x4x2x2x!quant.uniform<i8:f32, 0.1>> -> tensor<1x4x2x2xf32>
    %d = onnx.ConvTranspose(%f, %w) {strides = array<i64: 2, 2>, onnx_node = "deconv_overlap"} : (tensor<1x4x2x2xf32>, tensor<4x3x3x3xf32>) -> tensor<1x3x5x5xf32>
    %y = quant.quantize %d : tensor<1x3x5x5xf32> -> tensor<1x3x5x5x!quant.uniform<i8:f32, 0.2>>
    func.return %y : tensor<1x3x5x5x!quant.uniform<i8:f32, 0.2>>
  }
}

// CHECK: ember-opt: error: ConvTranspose 'deconv_overlap': the Ember NPU cannot run it (kernel 3x3 != stride 2x2; only kernel == stride runs, as a depth-to-space); move it to the host with -p autocrop (ember-compile --autocrop)
