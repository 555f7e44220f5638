// RUN: ember-opt %s | filecheck %s
// RUN: ember-opt %s | ember-opt | filecheck %s
// The npu dialect's printed form is the assembly listing: every record field as
// `name = value`, enum fields as keywords, token flags last, ONNX node and IR op as
// attributes. A double-buffered tile of a 3x3 convolution: CONV on the compute engine,
// POST (scale-on-store) and STORE on the store engine.

builtin.module {
  npu.load dram = 0 sram = 0 stride0 = 288 stride1 = 32 stride2 = 1 size0 = 16 size1 = 9 size2 = 32 buf = wgt pad_top = 0 pad_bottom = 0 pad_left = 0 pad_right = 0 pad_value = 0 {node = "conv1", origin = "quant.conv2d"}
  npu.load dram = 4608 sram = 0 stride0 = 2048 stride1 = 32 stride2 = 1 size0 = 8 size1 = 64 size2 = 32 buf = inp pad_top = 1 pad_bottom = 0 pad_left = 1 pad_right = 1 pad_value = -3 push_next {node = "conv1"}
  npu.conv inp = 0 wgt = 0 acc = 0 ih = 9 iw = 66 ic = 32 oc = 16 groups = 1 kh = 3 kw = 3 sh = 1 sw = 1 dh = 1 dw = 1 in_zp = -3 accumulate = 0 in_i16 = 0 pop_prev push_next {node = "conv1"}
  npu.post acc = 0 par = 0 out = 65536 lut = 0 count = 448 channels = 16 act_min = -128 act_max = 127 zp_out = -128 use_lut = 0 out_i16 = 0 pop_prev {node = "conv1"}
  npu.store dram = 70144 sram = 65536 stride0 = 1024 stride1 = 16 stride2 = 1 size0 = 7 size1 = 64 size2 = 16 buf = inp {node = "conv1"}
  npu.pool inp = 0 out = 0 lut = 0 multiplier = 0 ih = 1 iw = 1 channels = 1 kh = 1 kw = 1 sh = 1 sw = 1 pad_top = 0 pad_bottom = 0 pad_left = 0 pad_right = 0 shift = 0 zp_in = 0 zp_out = 0 act_min = 0 act_max = 0 mode = sum use_lut = 0 accumulate = 1 in_i16 = 0
  npu.sync engine = store
  npu.end
}

// CHECK:      npu.load dram = 0 sram = 0 stride0 = 288 stride1 = 32 stride2 = 1 size0 = 16 size1 = 9 size2 = 32 buf = wgt pad_top = 0 pad_bottom = 0 pad_left = 0 pad_right = 0 pad_value = 0 {node = "conv1", origin = "quant.conv2d"}
// CHECK-NEXT: npu.load {{.*}} buf = inp pad_top = 1 pad_bottom = 0 pad_left = 1 pad_right = 1 pad_value = -3 push_next {node = "conv1"}
// CHECK-NEXT: npu.conv inp = 0 wgt = 0 acc = 0 ih = 9 iw = 66 ic = 32 oc = 16 groups = 1 kh = 3 kw = 3 sh = 1 sw = 1 dh = 1 dw = 1 in_zp = -3 accumulate = 0 in_i16 = 0 pop_prev push_next {node = "conv1"}
// CHECK-NEXT: npu.post {{.*}} use_lut = 0 out_i16 = 0 pop_prev {node = "conv1"}
// CHECK-NEXT: npu.store {{.*}} buf = inp {node = "conv1"}
// CHECK-NEXT: npu.pool {{.*}} mode = sum use_lut = 0 accumulate = 1 in_i16 = 0
// CHECK-NEXT: npu.sync engine = store
// CHECK-NEXT: npu.end
