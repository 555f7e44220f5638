// RUN: ember-opt %s -p canonicalize | filecheck %s
// xDSL's canonicalize works on the onnx dialect: Identity and inference Dropout forward
// their input, and pure ops nothing uses are removed.

builtin.module attributes {onnx.ir_version = 8 : i64, onnx.opset_import = {"" = 13 : i64}} {
  func.func @g(%x: tensor<4xf32> {onnx.name = "x"}) -> tensor<4xf32> attributes {onnx.output_names = ["y"]} {
    %a = onnx.Identity(%x) {onnx_outputs = ["a"]} : (tensor<4xf32>) -> tensor<4xf32>
    %b = onnx.Dropout(%a) {onnx_outputs = ["b"]} : (tensor<4xf32>) -> tensor<4xf32>
    %dead = onnx.Exp(%x) {onnx_outputs = ["dead"]} : (tensor<4xf32>) -> tensor<4xf32>
    %y = onnx.Relu(%b) {onnx_outputs = ["y"]} : (tensor<4xf32>) -> tensor<4xf32>
    func.return %y : tensor<4xf32>
  }
}

// CHECK:      func.func @g(%[[X:.*]]: tensor<4xf32> {onnx.name = "x"})
// CHECK-NEXT:   %{{.*}} = onnx.Relu(%[[X]]) {onnx_outputs = ["y"]}
// CHECK-NEXT:   func.return
