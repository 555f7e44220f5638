// RUN: ember-opt %s -p quantize | filecheck %s
// Conv + bias Add + Relu + x*HardSigmoid(x) becomes one quant.conv2d: the bias folds into
// the int32 bias, the elementwise tail into its 256-entry table (read from the calibrated
// type of "cb"); Softmax stays float after a dequantize.

builtin.module attributes {onnx.ir_version = 8 : i64, onnx.opset_import = {"" = 13 : i64},
    ember.calibration = {method = "minmax", data = "", ranges = {
      x = array<f64: -1.0, 1.0>, c = array<f64: -2.0, 3.0>, cb = array<f64: -2.0, 3.5>, r = array<f64: 0.0, 3.5>,
      hs = array<f64: 0.0, 1.0>, y = array<f64: -0.4, 3.5>, p = array<f64: 0.0, 1.0>}}} {
  func.func @g(%x: tensor<1x2x4x4xf32> {onnx.name = "x"}) -> tensor<1x2x4x4xf32> attributes {onnx.output_names = ["p"]} {
    %w = onnx.initializer "w" = dense<"0x0000803F000000BF0000003F0000803F"> : tensor<2x2x1x1xf32>
    %b = onnx.initializer "b" = dense<"0x0000003F000000BF"> : tensor<1x2x1x1xf32>
    %c = onnx.Conv(%x, %w) {onnx_node = "conv", onnx_outputs = ["c"]} : (tensor<1x2x4x4xf32>, tensor<2x2x1x1xf32>) -> tensor<1x2x4x4xf32>
    %cb = onnx.Add(%c, %b) {onnx_node = "bias", onnx_outputs = ["cb"]} : (tensor<1x2x4x4xf32>, tensor<1x2x1x1xf32>) -> tensor<1x2x4x4xf32>
    %r = onnx.Relu(%cb) {onnx_node = "relu", onnx_outputs = ["r"]} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
    %hs = onnx.HardSigmoid(%r) {onnx_node = "hsig", onnx_outputs = ["hs"]} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
    %y = onnx.Mul(%r, %hs) {onnx_node = "hswish", onnx_outputs = ["y"]} : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
    %p = onnx.Softmax(%y) {axis = 1 : i64, onnx_node = "softmax", onnx_outputs = ["p"]} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
    func.return %p : tensor<1x2x4x4xf32>
  }
}

// CHECK:      %[[Q:.*]] = quant.quantize %x {onnx_outputs = ["x"]} : tensor<1x2x4x4xf32> -> tensor<1x2x4x4x!quant.uniform<i8:f32, 0.007843137718737125:-1>>
// CHECK-NEXT: %[[W:.*]] = quant.constant dense<{{\[\[\[\[}}127]], {{\[\[}}-64]]], {{\[\[\[}}64]], {{\[\[}}127]]]]> : tensor<2x2x1x1xi8> : tensor<2x2x1x1x!quant.uniform<i8:f32:0, {0.007874015718698502, 0.007874015718698502}>>
// CHECK-NEXT: %[[B:.*]] = quant.constant dense<[8096, -8096]> : tensor<2xi32>
// CHECK-NEXT: %[[Y:.*]] = quant.conv2d %[[Q]], %[[W]], %[[B]] {quant.lut_input = "cb", onnx_node = "conv,bias,relu,hsig,hswish", quant.pattern = "conv", onnx_outputs = ["y"]
// CHECK-SAME: lut_input_type = !quant.uniform<i8:f32, 0.021568628028035164:-35>
// CHECK-SAME: -> tensor<1x2x4x4x!quant.uniform<i8:f32, 0.015294117853045464:-102>>
// CHECK-NEXT: %[[D:.*]] = quant.dequantize %[[Y]]
// CHECK-NEXT: %p = onnx.Softmax(%[[D]])
// CHECK-NEXT: func.return %p
// CHECK-NOT:  onnx.Conv
