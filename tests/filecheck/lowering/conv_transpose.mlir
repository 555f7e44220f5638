// RUN: ember-opt %s -p 'lower-quant-to-npu{arch=ember16},npu-allocate,npu-schedule' | filecheck %s
// A 2x2 stride-2 transposed convolution (3 -> 5 channels): one 1x1 CONV and POST to
// 2*2*5 = 20 channels (bias and multipliers repeated per tap), then one STORE per input
// row whose strides do the depth-to-space: [3 columns, 2 output rows, 2*5 bytes] with
// column stride 2*5, row stride 6*5 = 30.

builtin.module {
  func.func @main(%x: tensor<1x3x2x3x!quant.uniform<i8:f32, 0.05:-3>> {onnx.name = "x"}) -> tensor<1x5x4x6x!quant.uniform<i8:f32, 0.25:-7>> attributes {onnx.output_names = ["y"]} {
    %w = quant.constant dense<1> : tensor<5x3x2x2xi8> : tensor<5x3x2x2x!quant.uniform<i8:f32:0, {0.1, 0.2, 0.05, 0.3, 0.1}>>
    %b = quant.constant dense<[1, -2, 3, 4, 5]> : tensor<5xi32> : tensor<5x!quant.uniform<i32:f32:0, {0.005, 0.01, 0.0025, 0.015, 0.005}>>
    %y = quant.conv_transpose %x, %w, %b {group = 1 : i64, multiplier = array<i32: 1073741824, 1073741824, 1073741824, 1073741824, 1073741824>, shift = array<i32: 36, 35, 37, 35, 36>, act_min = -7 : i32, act_max = 127 : i32, onnx_node = "deconv"} : (tensor<1x3x2x3x!quant.uniform<i8:f32, 0.05:-3>>, tensor<5x3x2x2x!quant.uniform<i8:f32:0, {0.1, 0.2, 0.05, 0.3, 0.1}>>, tensor<5x!quant.uniform<i32:f32:0, {0.005, 0.01, 0.0025, 0.015, 0.005}>>) -> tensor<1x5x4x6x!quant.uniform<i8:f32, 0.25:-7>>
    func.return %y : tensor<1x5x4x6x!quant.uniform<i8:f32, 0.25:-7>>
  }
}

// CHECK:      {name = "deconv.params", kind = "const", size = 240 : i64
// CHECK-NOT:  func.func
// CHECK:      npu.load dram = {{[0-9]+}} {{.*}} size0 = 3 size1 = 1 size2 = 20 buf = par
// CHECK-NEXT: npu.load dram = 0 {{.*}} size0 = 20 size1 = 1 size2 = 3 buf = wgt
// CHECK-NEXT: npu.load dram = [[X:[0-9]+]] sram = 0 stride0 = 9 stride1 = 3 stride2 = 1 size0 = 2 size1 = 3 size2 = 3 buf = inp
// CHECK-NEXT: npu.conv inp = 0 {{.*}} ih = 2 iw = 3 ic = 3 oc = 20 groups = 1 kh = 1 kw = 1 sh = 1 sw = 1 {{.*}} in_zp = -3
// CHECK-NEXT: npu.post {{.*}} count = 6 channels = 20 act_min = -7 act_max = 127 zp_out = -7 use_lut = 0 out_i16 = 0 pop_prev
// CHECK-NEXT: npu.store dram = [[Y:[0-9]+]] sram = [[OUT:[0-9]+]] stride0 = 10 stride1 = 30 stride2 = 1 size0 = 3 size1 = 2 size2 = 10 buf = inp {node = "deconv", origin = "quant.conv_transpose"}
// CHECK-NEXT: npu.store dram = {{[0-9]+}} sram = {{[0-9]+}} stride0 = 10 stride1 = 30 stride2 = 1 size0 = 3 size1 = 2 size2 = 10 buf = inp {node = "deconv", origin = "quant.conv_transpose"}
// CHECK-NEXT: npu.end
