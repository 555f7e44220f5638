// RUN: not ember-opt %s 2>&1 | filecheck %s
// The ops verify the instruction's structure with the simulator's own checks, and
// ember-opt reports a malformed instruction as one line.

builtin.module {
  npu.conv inp = 0 wgt = 0 acc = 0 ih = 9 iw = 9 ic = 32 oc = 16 groups = 3 kh = 3 kw = 3 sh = 1 sw = 1 dh = 1 dw = 1 in_zp = 0 accumulate = 0 in_i16 = 0
}

// CHECK: ember-opt: error: {{.*}}verify.mlir: npu.conv: groups = 3 must divide ic = 32 and oc = 16
// CHECK-NOT: Traceback
