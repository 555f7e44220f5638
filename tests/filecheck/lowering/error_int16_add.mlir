// RUN: not ember-opt %s -p 'lower-quant-to-npu{arch=ember16}' 2>&1 | filecheck %s
// Convolutions, global average pooling and one operand of a product read int16 tensors on
// the NPU, only convolutions write them; an int16 add is refused with one line naming the
// node (the quantizer never makes one: it keeps such results int8).

builtin.module {
  func.func @main(%x: tensor<1x4x2x2x!quant.uniform<i8:f32, 0.1>> {onnx.name = "x"}) -> tensor<1x4x2x2x!quant.uniform<i8:f32, 0.2>> attributes {onnx.output_names = ["y"]} {
    %w = quant.constant dense<1> : tensor<4x4x1x1xi8> : tensor<4x4x1x1x!quant.uniform<i8:f32:0, {0.1, 0.1, 0.1, 0.1}>>
    %h = quant.conv2d %x, %w {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64, multiplier = array<i32: 1073741824, 1073741824, 1073741824, 1073741824>, shift = array<i32: 30, 30, 30, 30>, act_min = -32768 : i32, act_max = 32767 : i32, onnx_node = "conv1"} : (tensor<1x4x2x2x!quant.uniform<i8:f32, 0.1>>, tensor<4x4x1x1x!quant.uniform<i8:f32:0, {0.1, 0.1, 0.1, 0.1}>>) -> tensor<1x4x2x2x!quant.uniform<i16:f32, 0.01>>
    %y = quant.add %h, %h {input_multipliers = array<i32: 1073741824, 1073741824>, input_shifts = array<i32: 31, 31>, multiplier = 1073741824 : i32, shift = 30 : i32, act_min = -128 : i32, act_max = 127 : i32, onnx_node = "add1"} : (tensor<1x4x2x2x!quant.uniform<i16:f32, 0.01>>, tensor<1x4x2x2x!quant.uniform<i16:f32, 0.01>>) -> tensor<1x4x2x2x!quant.uniform<i8:f32, 0.2>>
    func.return %y : tensor<1x4x2x2x!quant.uniform<i8:f32, 0.2>>
  }
}

// CHECK: ember-opt: error: add1: quant.add on int16 tensors; the NPU reads int16 only in convolutions, global average pooling and one full-shaped operand of a product, and writes it only from convolutions; keep this layer's neighbours int8 (model script precision)
