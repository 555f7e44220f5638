// RUN: not ember-opt %s -p 'lower-quant-to-npu{arch=ember16}' 2>&1 | filecheck %s
// Bad input is one line naming the ONNX node and the limit, with what to do.

// Float computation after the quantized part belongs to the host.
builtin.module {
  func.func @main(%x: tensor<1x4x2x2x!quant.uniform<i8:f32, 0.1>> {onnx.name = "x"}) -> tensor<1x4x2x2xf32> attributes {onnx.output_names = ["y"]} {
    %f = quant.dequantize %x {onnx_node = "dq"} : tensor<1x4x2x2x!quant.uniform<i8:f32, 0.1>> -> tensor<1x4x2x2xf32>
    %y = onnx.Relu(%f) {onnx_node = "relu_host"} : (tensor<1x4x2x2xf32>) -> tensor<1x4x2x2xf32>
    func.return %y : tensor<1x4x2x2xf32>
  }
}

// CHECK: ember-opt: error: y: the model output is computed in float; run it on the host: compile with --autocrop
