// RUN: not ember-opt %s -p 'lower-quant-to-npu{arch=ember16}' 2>&1 | filecheck %s
// Bad input is one line naming the ONNX node and the limit, with what to do.

// A vector op whose one pixel (100000 channels, two operands and a result, twice) does
// not fit the input buffer.
builtin.module {
  func.func @main(%a: tensor<1x100000x!quant.uniform<i8:f32, 0.1>> {onnx.name = "a"}) -> tensor<1x100000x!quant.uniform<i8:f32, 0.2>> attributes {onnx.output_names = ["y"]} {
    %y = quant.add %a, %a {input_multipliers = array<i32: 1073741824, 1073741824>, input_shifts = array<i32: 1, 1>, multiplier = 1073741824 : i32, shift = 21 : i32, act_min = -128 : i32, act_max = 127 : i32, onnx_node = "wide_add"} : (tensor<1x100000x!quant.uniform<i8:f32, 0.1>>, tensor<1x100000x!quant.uniform<i8:f32, 0.1>>) -> tensor<1x100000x!quant.uniform<i8:f32, 0.2>>
    func.return %y : tensor<1x100000x!quant.uniform<i8:f32, 0.2>>
  }
}

// CHECK: ember-opt: error: wide_add: cannot tile for ember16: one output pixel needs 1x1x100000 input bytes, more than the input buffer (262144 bytes) holds twice; run it on the host: compile with --autocrop
