// RUN: ember-opt %s -p 'lower-quant-to-npu{arch=ember16},npu-allocate,npu-schedule' | filecheck %s
// An int16 layer between int8 ones (a16w8): conv1 writes its int16 result (POST out_i16,
// clamp to the int16 range of its ReLU), stored as 2 bytes per element; conv2 loads it as a
// byte box of 2 * channels per pixel, padded with zero bytes (the int16 zero point), and
// convolves it with in_i16.

builtin.module {
  func.func @main(%x: tensor<1x3x8x8x!quant.uniform<i8:f32, 0.05:-3>> {onnx.name = "x"}) -> tensor<1x2x8x8x!quant.uniform<i8:f32, 0.5:-128>> attributes {onnx.output_names = ["y"]} {
    %w1 = quant.constant dense<1> : tensor<4x3x1x1xi8> : tensor<4x3x1x1x!quant.uniform<i8:f32:0, {0.1, 0.2, 0.05, 0.3}>>
    %h = quant.conv2d %x, %w1 {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64, multiplier = array<i32: 1073741824, 1073741824, 1073741824, 1073741824>, shift = array<i32: 28, 28, 28, 28>, act_min = 0 : i32, act_max = 32767 : i32, onnx_node = "conv1"} : (tensor<1x3x8x8x!quant.uniform<i8:f32, 0.05:-3>>, tensor<4x3x1x1x!quant.uniform<i8:f32:0, {0.1, 0.2, 0.05, 0.3}>>) -> tensor<1x4x8x8x!quant.uniform<i16:f32, 0.001>>
    %w2 = quant.constant dense<1> : tensor<2x4x3x3xi8> : tensor<2x4x3x3x!quant.uniform<i8:f32:0, {0.1, 0.2}>>
    %y = quant.conv2d %h, %w2 {strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 1 : i64, multiplier = array<i32: 1073741824, 1073741824>, shift = array<i32: 40, 40>, act_min = -128 : i32, act_max = 127 : i32, onnx_node = "conv2"} : (tensor<1x4x8x8x!quant.uniform<i16:f32, 0.001>>, tensor<2x4x3x3x!quant.uniform<i8:f32:0, {0.1, 0.2}>>) -> tensor<1x2x8x8x!quant.uniform<i8:f32, 0.5:-128>>
    func.return %y : tensor<1x2x8x8x!quant.uniform<i8:f32, 0.5:-128>>
  }
}

// CHECK:      {name = "h", kind = "scratch", size = 512 : i64, shape = [1 : i64, 8 : i64, 8 : i64, 4 : i64], layout = "NHWC", producer = "conv1", offset = [[H:[0-9]+]] : i64, dtype = "int16"}
// CHECK:      npu.conv {{.*}} in_zp = -3 accumulate = 0 in_i16 = 0 pop_prev push_next {node = "conv1", origin = "quant.conv2d"}
// CHECK-NEXT: npu.post {{.*}} count = 64 channels = 4 act_min = 0 act_max = 32767 zp_out = 0 use_lut = 0 out_i16 = 1 pop_prev
// CHECK-NEXT: npu.store dram = [[H]] sram = {{[0-9]*[02468]}} stride0 = 64 stride1 = 8 stride2 = 1 size0 = 8 size1 = 8 size2 = 8 buf = inp
// CHECK:      npu.load dram = [[H]] sram = [[IN:[0-9]*[02468]]] stride0 = 64 stride1 = 8 stride2 = 1 size0 = 8 size1 = 8 size2 = 8 buf = inp pad_top = 1 pad_bottom = 1 pad_left = 1 pad_right = 1 pad_value = 0
// CHECK-NEXT: npu.conv inp = [[IN]] {{.*}} ih = 10 iw = 10 ic = 4 oc = 2 {{.*}} in_zp = 0 accumulate = 0 in_i16 = 1
// CHECK-NEXT: npu.post {{.*}} act_min = -128 act_max = 127 zp_out = -128 use_lut = 0 out_i16 = 0
// CHECK-NEXT: npu.store {{.*}} size2 = 2 buf = inp
