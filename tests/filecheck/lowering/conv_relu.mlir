// RUN: ember-opt %s -p 'lower-quant-to-npu{arch=ember16},npu-allocate,npu-schedule' | filecheck %s
// A 3x3 conv with bias and fused ReLU: weights, parameters, padded input tile, CONV,
// POST, STORE; DRAM is allocated (constants, then input, then output) and the engines
// synchronise with tokens: load -> CONV (compute) -> POST (store engine, reading the
// CONV's accumulator half), then the STORE in the store engine's own order.

builtin.module {
  func.func @main(%x: tensor<1x3x8x8x!quant.uniform<i8:f32, 0.05:-3>> {onnx.name = "x"}) -> tensor<1x4x8x8x!quant.uniform<i8:f32, 0.5:-128>> attributes {onnx.output_names = ["y"]} {
    %w = quant.constant dense<1> : tensor<4x3x3x3xi8> : tensor<4x3x3x3x!quant.uniform<i8:f32:0, {0.1, 0.2, 0.05, 0.3}>>
    %b = quant.constant dense<[1, -2, 3, 4]> : tensor<4xi32> : tensor<4x!quant.uniform<i32:f32:0, {0.005, 0.01, 0.0025, 0.015}>>
    %y = quant.conv2d %x, %w, %b {strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 1 : i64, multiplier = array<i32: 1073741824, 1073741824, 1073741824, 1073741824>, shift = array<i32: 36, 35, 37, 35>, act_min = -128 : i32, act_max = 127 : i32, onnx_node = "conv1"} : (tensor<1x3x8x8x!quant.uniform<i8:f32, 0.05:-3>>, tensor<4x3x3x3x!quant.uniform<i8:f32:0, {0.1, 0.2, 0.05, 0.3}>>, tensor<4x!quant.uniform<i32:f32:0, {0.005, 0.01, 0.0025, 0.015}>>) -> tensor<1x4x8x8x!quant.uniform<i8:f32, 0.5:-128>>
    func.return %y : tensor<1x4x8x8x!quant.uniform<i8:f32, 0.5:-128>>
  }
}

// CHECK:      builtin.module attributes {npu.arch = "ember16", npu.regions = [
// CHECK-SAME: {name = "x", kind = "input", size = 192 : i64, shape = [1 : i64, 8 : i64, 8 : i64, 3 : i64], layout = "NHWC", scale = 5.000000e-02 : f64, zero_point = -3 : i64, offset = [[X:[0-9]+]] : i64}
// CHECK-SAME: {name = "y", kind = "output", size = 256 : i64, shape = [1 : i64, 8 : i64, 8 : i64, 4 : i64], layout = "NHWC", producer = "conv1", scale = 5.000000e-01 : f64, zero_point = -128 : i64, offset = [[Y:[0-9]+]] : i64}
// CHECK-SAME: {name = "conv1.weights", kind = "const", size = 108 : i64, producer = "conv1", data = dense<1> : tensor<108xui8>, offset = 0 : i64}
// CHECK-SAME: {name = "conv1.params", kind = "const", size = 48 : i64, producer = "conv1", data = dense<[1, 0, 0, 0, 254, {{[^>]*}}]> : tensor<48xui8>, offset = 128 : i64}
// CHECK-SAME: npu.dram_size = 640 : i64
// CHECK-NOT:  func.func
// CHECK:      npu.load dram = 128 {{.*}} size0 = 3 size1 = 1 size2 = 4 buf = par
// CHECK-NEXT: npu.load dram = 0 {{.*}} size0 = 4 size1 = 9 size2 = 3 buf = wgt
// CHECK-NEXT: npu.load dram = [[X]] sram = 0 stride0 = 24 stride1 = 3 stride2 = 1 size0 = 8 size1 = 8 size2 = 3 buf = inp pad_top = 1 pad_bottom = 1 pad_left = 1 pad_right = 1 pad_value = -3 push_next {node = "conv1", origin = "quant.conv2d"}
// CHECK-NEXT: npu.conv inp = 0 wgt = {{[0-9]+}} acc = [[ACC:[0-9]+]] ih = 10 iw = 10 ic = 3 oc = 4 groups = 1 kh = 3 kw = 3 sh = 1 sw = 1 dh = 1 dw = 1 in_zp = -3 accumulate = 0 in_i16 = 0 pop_prev push_next
// CHECK-NEXT: npu.post acc = [[ACC]] par = {{[0-9]+}} out = {{[0-9]+}} lut = 0 count = 64 channels = 4 act_min = -128 act_max = 127 zp_out = -128 use_lut = 0 out_i16 = 0 pop_prev {node = "conv1", origin = "quant.conv2d"}
// CHECK-NEXT: npu.store dram = [[Y]] {{.*}} size0 = 8 size1 = 8 size2 = 4 buf = inp {node = "conv1", origin = "quant.conv2d"}
// CHECK-NEXT: npu.end
