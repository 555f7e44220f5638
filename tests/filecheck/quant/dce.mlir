// RUN: ember-opt %s -p canonicalize | filecheck %s
// quant ops are pure: results nobody uses are removed.

builtin.module {
  func.func @main(%x: tensor<1x4x8x8x!quant.uniform<i8:f32, 0.1:2>>) -> tensor<1x4x8x8x!quant.uniform<i8:f32, 0.1:2>> {
    %dead = quant.global_avg_pool %x {multiplier = 1073741824 : i32, shift = 36 : i32} : (tensor<1x4x8x8x!quant.uniform<i8:f32, 0.1:2>>) -> tensor<1x4x1x1x!quant.uniform<i8:f32, 0.1:2>>
    %t = quant.transpose %x {perm = array<i64: 0, 1, 3, 2>} : (tensor<1x4x8x8x!quant.uniform<i8:f32, 0.1:2>>) -> tensor<1x4x8x8x!quant.uniform<i8:f32, 0.1:2>>
    func.return %t : tensor<1x4x8x8x!quant.uniform<i8:f32, 0.1:2>>
  }
}

// CHECK-NOT:  quant.global_avg_pool
// CHECK:      %{{.*}} = quant.transpose %{{.*}} {perm = array<i64: 0, 1, 3, 2>}
// CHECK-NEXT: func.return
