// RUN: ember-opt %s | ember-opt | filecheck %s
// The quant dialect's types and ops print and parse back unchanged.

builtin.module {
  func.func @main(%x: tensor<1x3x8x8xf32> {onnx.name = "x"}) -> tensor<1x4x4x4xf32> attributes {onnx.output_names = ["y"]} {
    %q = quant.quantize %x : tensor<1x3x8x8xf32> -> tensor<1x3x8x8x!quant.uniform<i8:f32, 0.0235:-3>>
    %w = quant.constant dense<1> : tensor<4x3x3x3xi8> : tensor<4x3x3x3x!quant.uniform<i8:f32:0, {0.1, 0.2, 1.0e-05, 3.0}>>
    %b = quant.constant dense<[1, -2, 3, 4]> : tensor<4xi32> : tensor<4x!quant.uniform<i32:f32:0, {0.00235, 0.0047, 2.35e-07, 0.0705}>>
    %c = quant.conv2d %q, %w, %b {strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 1 : i64, multiplier = array<i32: 1073741824, 1073741824, 1073741824, 1073741824>, shift = array<i32: 31, 31, 31, 31>, act_min = 1 : i32, act_max = 127 : i32} : (tensor<1x3x8x8x!quant.uniform<i8:f32, 0.0235:-3>>, tensor<4x3x3x3x!quant.uniform<i8:f32:0, {0.1, 0.2, 1.0e-05, 3.0}>>, tensor<4x!quant.uniform<i32:f32:0, {0.00235, 0.0047, 2.35e-07, 0.0705}>>) -> tensor<1x4x8x8x!quant.uniform<i8:f32, 0.5:1>>
    %p = quant.max_pool %c {kernel = array<i64: 2, 2>, strides = array<i64: 2, 2>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>} : (tensor<1x4x8x8x!quant.uniform<i8:f32, 0.5:1>>) -> tensor<1x4x4x4x!quant.uniform<i8:f32, 0.5:1>>
    %s = quant.lut %p {table = array<i8: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112, 113, 114, 115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 126, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127, 127>} : (tensor<1x4x4x4x!quant.uniform<i8:f32, 0.5:1>>) -> tensor<1x4x4x4x!quant.uniform<i8:f32, 0.25:-128>>
    %y = quant.dequantize %s : tensor<1x4x4x4x!quant.uniform<i8:f32, 0.25:-128>> -> tensor<1x4x4x4xf32>
    func.return %y : tensor<1x4x4x4xf32>
  }
}

// CHECK:      %[[Q:.*]] = quant.quantize %{{.*}} : tensor<1x3x8x8xf32> -> tensor<1x3x8x8x!quant.uniform<i8:f32, 0.0235:-3>>
// CHECK-NEXT: %[[W:.*]] = quant.constant dense<1> : tensor<4x3x3x3xi8> : tensor<4x3x3x3x!quant.uniform<i8:f32:0, {0.1, 0.2, 1.0e-05, 3.0}>>
// CHECK-NEXT: %[[B:.*]] = quant.constant dense<[1, -2, 3, 4]> : tensor<4xi32> : tensor<4x!quant.uniform<i32:f32:0, {0.00235, 0.0047, 2.35e-07, 0.0705}>>
// CHECK-NEXT: %[[C:.*]] = quant.conv2d %[[Q]], %[[W]], %[[B]] {strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 1 : i64, multiplier = array<i32: 1073741824, 1073741824, 1073741824, 1073741824>, shift = array<i32: 31, 31, 31, 31>, act_min = 1 : i32, act_max = 127 : i32}
// CHECK-SAME: -> tensor<1x4x8x8x!quant.uniform<i8:f32, 0.5:1>>
// CHECK-NEXT: %[[P:.*]] = quant.max_pool %[[C]] {kernel = array<i64: 2, 2>, strides = array<i64: 2, 2>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>}
// CHECK-NEXT: %[[S:.*]] = quant.lut %[[P]] {table = array<i8: 0, 1, 2,
// CHECK-SAME: -> tensor<1x4x4x4x!quant.uniform<i8:f32, 0.25:-128>>
// CHECK-NEXT: %{{.*}} = quant.dequantize %[[S]] : tensor<1x4x4x4x!quant.uniform<i8:f32, 0.25:-128>> -> tensor<1x4x4x4xf32>
