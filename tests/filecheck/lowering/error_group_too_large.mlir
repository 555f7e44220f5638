// RUN: not ember-opt %s -p 'lower-quant-to-npu{arch=ember16}' 2>&1 | filecheck %s
// Bad input is one line naming the ONNX node and the limit, with what to do.

// A grouped conv whose one group of weights (2 x 3x3 x 10000 bytes) exceeds half the
// weight buffer.
builtin.module {
  func.func @main(%x: tensor<1x20000x3x3x!quant.uniform<i8:f32, 0.1>> {onnx.name = "x"}) -> tensor<1x4x1x1x!quant.uniform<i8:f32, 0.1>> attributes {onnx.output_names = ["y"]} {
    %w = quant.constant dense<1> : tensor<4x10000x3x3xi8> : tensor<4x10000x3x3x!quant.uniform<i8:f32, 0.01>>
    %y = quant.conv2d %x, %w {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 2 : i64, multiplier = array<i32: 1073741824, 1073741824, 1073741824, 1073741824>, shift = array<i32: 40, 40, 40, 40>, act_min = -128 : i32, act_max = 127 : i32, onnx_node = "huge_group"} : (tensor<1x20000x3x3x!quant.uniform<i8:f32, 0.1>>, tensor<4x10000x3x3x!quant.uniform<i8:f32, 0.01>>) -> tensor<1x4x1x1x!quant.uniform<i8:f32, 0.1>>
    func.return %y : tensor<1x4x1x1x!quant.uniform<i8:f32, 0.1>>
  }
}

// CHECK: ember-opt: error: huge_group: cannot tile for ember16: the weights of one group (180000 bytes) exceed half the weight buffer (131072 bytes); run it on the host: compile with --autocrop
