// RUN: ember-opt %s -p 'lower-quant-to-npu{arch=ember16},npu-allocate,npu-schedule' | filecheck %s
// A chain of single-tile 1x1 convs: each layer reads all of its input before it writes its
// output, so npu-allocate gives a, b and c the same DRAM bytes, and npu-schedule orders
// each write after the read it must follow (a compute SYNC relays store -> load). The
// shared weights are one constant block.

!x = tensor<1x16x4x4x!quant.uniform<i8:f32, 0.1>>
!w = tensor<16x16x1x1x!quant.uniform<i8:f32:0, {0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01}>>
builtin.module {
  func.func @main(%x: !x {onnx.name = "x"}) -> !x attributes {onnx.output_names = ["d"]} {
    %w = quant.constant dense<1> : tensor<16x16x1x1xi8> : !w
    %a = quant.conv2d %x, %w {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64, multiplier = array<i32: 1073741824, 1073741824, 1073741824, 1073741824, 1073741824, 1073741824, 1073741824, 1073741824, 1073741824, 1073741824, 1073741824, 1073741824, 1073741824, 1073741824, 1073741824, 1073741824>, shift = array<i32: 34, 34, 34, 34, 34, 34, 34, 34, 34, 34, 34, 34, 34, 34, 34, 34>, act_min = -128 : i32, act_max = 127 : i32, onnx_node = "A", onnx_outputs = ["a"]} : (!x, !w) -> !x
    %b = quant.conv2d %a, %w {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64, multiplier = array<i32: 1073741824, 1073741824, 1073741824, 1073741824, 1073741824, 1073741824, 1073741824, 1073741824, 1073741824, 1073741824, 1073741824, 1073741824, 1073741824, 1073741824, 1073741824, 1073741824>, shift = array<i32: 34, 34, 34, 34, 34, 34, 34, 34, 34, 34, 34, 34, 34, 34, 34, 34>, act_min = -128 : i32, act_max = 127 : i32, onnx_node = "B", onnx_outputs = ["b"]} : (!x, !w) -> !x
    %c = quant.conv2d %b, %w {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64, multiplier = array<i32: 1073741824, 1073741824, 1073741824, 1073741824, 1073741824, 1073741824, 1073741824, 1073741824, 1073741824, 1073741824, 1073741824, 1073741824, 1073741824, 1073741824, 1073741824, 1073741824>, shift = array<i32: 34, 34, 34, 34, 34, 34, 34, 34, 34, 34, 34, 34, 34, 34, 34, 34>, act_min = -128 : i32, act_max = 127 : i32, onnx_node = "C", onnx_outputs = ["c"]} : (!x, !w) -> !x
    %d = quant.conv2d %c, %w {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64, multiplier = array<i32: 1073741824, 1073741824, 1073741824, 1073741824, 1073741824, 1073741824, 1073741824, 1073741824, 1073741824, 1073741824, 1073741824, 1073741824, 1073741824, 1073741824, 1073741824, 1073741824>, shift = array<i32: 34, 34, 34, 34, 34, 34, 34, 34, 34, 34, 34, 34, 34, 34, 34, 34>, act_min = -128 : i32, act_max = 127 : i32, onnx_node = "D"} : (!x, !w) -> !x
    func.return %d : !x
  }
}

// CHECK:      {name = "a", kind = "scratch", size = 256 : i64, shape = [1 : i64, 4 : i64, 4 : i64, 16 : i64], layout = "NHWC", producer = "A", offset = [[A:[0-9]+]] : i64}
// CHECK-SAME: {name = "A.weights", kind = "const", size = 256 : i64
// CHECK-SAME: {name = "b", kind = "scratch", size = 256 : i64, {{[^}]*}}producer = "B", offset = [[A]] : i64}
// CHECK-SAME: {name = "c", kind = "scratch", size = 256 : i64, {{[^}]*}}producer = "C", offset = [[A]] : i64}
// CHECK-NOT:  .weights
// CHECK:      npu.post {{.*}} pop_prev {node = "A", origin = "quant.conv2d"}
// CHECK-NEXT: npu.store dram = [[A]] {{.*}} buf = inp push_prev {node = "A", origin = "quant.conv2d"}
// CHECK:      npu.sync engine = compute pop_next push_prev {node = "B", origin = "npu-schedule"}
// CHECK-NEXT: npu.load dram = [[A]] {{.*}} buf = inp {{.*}} pop_next push_next {node = "B", origin = "quant.conv2d"}
// CHECK:      npu.store dram = [[A]] {{.*}} {node = "B", origin = "quant.conv2d"}
// CHECK:      npu.store dram = [[A]] {{.*}} {node = "C", origin = "quant.conv2d"}
// CHECK:      npu.store dram = {{[0-9]+}} {{.*}} {node = "D", origin = "quant.conv2d"}
// CHECK-NEXT: npu.end
