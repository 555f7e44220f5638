// RUN: ember-opt %shared/models/ppocrv4_det.onnx --input-shape x=1,3,320,320 -p onnx-constant-fold --elide-weights | filecheck %s
// The PP-OCRv4 detector imports with a static input shape; constant folding leaves no
// Constant node; elided weights keep the listing readable.

// CHECK: func.func @{{.*}}(%{{.*}}: tensor<1x3x320x320xf32> {onnx.name = "x"}) -> tensor<1x1x320x320xf32>
// CHECK-NOT: onnx.Constant(
// CHECK: onnx.initializer "{{.*}}" = dense_resource<__elided__> : tensor<
// CHECK-NOT: onnx.Constant(
// CHECK: onnx.Conv(
// CHECK-NOT: onnx.Constant(
// CHECK: func.return
