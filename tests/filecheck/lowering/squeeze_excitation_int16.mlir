// RUN: ember-opt %s -p 'lower-quant-to-npu{arch=ember16},npu-allocate,npu-schedule' | filecheck %s
// A squeeze-excitation block on int16 features: global average pooling sums the int16 tile
// (POOL sum in_i16, zero point 0) into the accumulator and POST makes the int8 gate input;
// the product reads the int16 features as ELTW's `a` (a_i16, an even address, 2 bytes per
// element) against the int8 gate broadcast over the pixels, which sits below it: 3 bytes,
// so the int16 tile starts at 4.

builtin.module {
  func.func @main(%x: tensor<1x3x4x4x!quant.uniform<i8:f32, 0.05:-3>> {onnx.name = "x"}) -> tensor<1x3x4x4x!quant.uniform<i8:f32, 0.02:0>> attributes {onnx.output_names = ["y"]} {
    %w = quant.constant dense<1> : tensor<3x3x1x1xi8> : tensor<3x3x1x1x!quant.uniform<i8:f32:0, {0.1, 0.2, 0.05}>>
    %h = quant.conv2d %x, %w {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64, multiplier = array<i32: 1073741824, 1073741824, 1073741824>, shift = array<i32: 28, 28, 28>, act_min = -32768 : i32, act_max = 32767 : i32, onnx_node = "conv"} : (tensor<1x3x4x4x!quant.uniform<i8:f32, 0.05:-3>>, tensor<3x3x1x1x!quant.uniform<i8:f32:0, {0.1, 0.2, 0.05}>>) -> tensor<1x3x4x4x!quant.uniform<i16:f32, 0.001>>
    %g = quant.global_avg_pool %h {multiplier = 1073741824 : i32, shift = 36 : i32, onnx_node = "pool"} : (tensor<1x3x4x4x!quant.uniform<i16:f32, 0.001>>) -> tensor<1x3x1x1x!quant.uniform<i8:f32, 0.004:-128>>
    %y = quant.mul %h, %g {multiplier = 1073741824 : i32, shift = 32 : i32, act_min = -128 : i32, act_max = 127 : i32, onnx_node = "mul"} : (tensor<1x3x4x4x!quant.uniform<i16:f32, 0.001>>, tensor<1x3x1x1x!quant.uniform<i8:f32, 0.004:-128>>) -> tensor<1x3x4x4x!quant.uniform<i8:f32, 0.02:0>>
    func.return %y : tensor<1x3x4x4x!quant.uniform<i8:f32, 0.02:0>>
  }
}

// CHECK:      {name = "h", kind = "scratch", size = 96 : i64, {{.*}} dtype = "int16"}
// CHECK:      npu.load dram = [[H:[0-9]+]] sram = [[IN:[0-9]*[02468]]] stride0 = 24 stride1 = 6 stride2 = 1 size0 = 4 size1 = 4 size2 = 6 buf = inp
// CHECK-NEXT: npu.pool inp = [[IN]] {{.*}} ih = 4 iw = 4 channels = 3 kh = 4 kw = 4 {{.*}} zp_in = 0 {{.*}} mode = sum use_lut = 0 accumulate = 0 in_i16 = 1 {{.*}}{node = "pool", origin = "quant.global_avg_pool"}
// CHECK-NEXT: npu.post {{.*}} count = 1 channels = 3 {{.*}} zp_out = -128 use_lut = 0 out_i16 = 0
// CHECK:      npu.load {{.*}} sram = 0 {{.*}} size0 = 1 size1 = 1 size2 = 3 buf = inp {{.*}}{node = "mul", origin = "quant.mul"}
// CHECK-NEXT: npu.load dram = [[H]] sram = 4 stride0 = 96 stride1 = 6 stride2 = 1 size0 = 1 size1 = 16 size2 = 6 buf = inp
// CHECK-NEXT: npu.eltw a = 4 b = 0 {{.*}} count = 16 {{.*}} channels = 3 {{.*}} zp_a = 0 zp_b = -128 zp_out = 0 {{.*}} mode = mul broadcast_b = 1 a_i16 = 1 {{.*}}{node = "mul", origin = "quant.mul"}
