// RUN: ember-opt %shared/models/ppocrv4_det.onnx --input-shape x=1,3,320,320 -p autocrop --elide-weights 2>&1 | filecheck %s
// The PP-OCRv4 detector runs on the NPU up to its last ConvTranspose (+ bias); the final
// Sigmoid decodes the head on the host.

// CHECK: autocrop: main starts at graph input 'x'
// CHECK-NEXT: autocrop: main ends at 'p2o.Add.281' (Add 'p2o.Add.280'): Sigmoid 'p2o.Sigmoid.0' runs on the host (head decoding after the last convolution)
// CHECK: onnx.crop = {inputs = ["x"], outputs = ["p2o.Add.281"]}
// CHECK: func.func @{{.*}}(%{{.*}}: tensor<1x3x320x320xf32> {onnx.name = "x"}) -> tensor<1x1x320x320xf32> attributes {onnx.output_names = ["p2o.Add.281"], onnx.part = "main"}
// CHECK-NOT: onnx.Sigmoid
// CHECK: func.func @{{.*}}_post{{"?}}(%{{.*}}: tensor<1x1x320x320xf32> {onnx.name = "p2o.Add.281"}) -> tensor<1x1x320x320xf32> attributes {onnx.output_names = ["sigmoid_0.tmp_0"], onnx.part = "post"}
// CHECK-NEXT: onnx.Sigmoid
// CHECK-NEXT: func.return
