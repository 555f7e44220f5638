// RUN: ember-opt %s -p onnx-constant-fold | filecheck %s
// A Shape -> Gather -> Concat -> Reshape chain on a static shape folds to one initializer;
// Identity forwards; Constant becomes an initializer; dead initializers go.

builtin.module attributes {onnx.ir_version = 8 : i64, onnx.opset_import = {"" = 13 : i64}} {
  func.func @g(%x: tensor<2x3x4xf32> {onnx.name = "x"}) -> tensor<2x12xf32> attributes {onnx.output_names = ["y"]} {
    %shape = onnx.Shape(%x) {onnx_outputs = ["shape"]} : (tensor<2x3x4xf32>) -> tensor<3xi64>
    %zero = onnx.Constant() {value = dense<0> : tensor<i64>, onnx_outputs = ["zero"]} : () -> tensor<i64>
    %n = onnx.Gather(%shape, %zero) {axis = 0 : i64, onnx_outputs = ["n"]} : (tensor<3xi64>, tensor<i64>) -> tensor<i64>
    %axes = onnx.initializer "axes" = dense<0> : tensor<1xi64>
    %n1 = onnx.Unsqueeze(%n, %axes) {onnx_outputs = ["n1"]} : (tensor<i64>, tensor<1xi64>) -> tensor<1xi64>
    %minus = onnx.initializer "minus" = dense<-1> : tensor<1xi64>
    %target = onnx.Concat(%n1, %minus) {axis = 0 : i64, onnx_outputs = ["target"]} : (tensor<1xi64>, tensor<1xi64>) -> tensor<2xi64>
    %xi = onnx.Identity(%x) {onnx_outputs = ["x_copy"]} : (tensor<2x3x4xf32>) -> tensor<2x3x4xf32>
    %y = onnx.Reshape(%xi, %target) {onnx_outputs = ["y"]} : (tensor<2x3x4xf32>, tensor<2xi64>) -> tensor<2x12xf32>
    func.return %y : tensor<2x12xf32>
  }
}

// CHECK:      func.func @g(%[[X:.*]]: tensor<2x3x4xf32> {onnx.name = "x"})
// CHECK-NEXT:   %[[T:.*]] = onnx.initializer "target" = dense<"0x0200000000000000FFFFFFFFFFFFFFFF"> : tensor<2xi64>
// CHECK-NEXT:   %{{.*}} = onnx.Reshape(%[[X]], %[[T]]) {onnx_outputs = ["y"]}
// CHECK-NEXT:   func.return
// CHECK-NOT: onnx.Shape
// CHECK-NOT: onnx.Identity
