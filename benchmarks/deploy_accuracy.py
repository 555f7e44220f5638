"""Final-output cosine to float of a model compiled by ember-compile, run through the
runtime (pre ONNX -> simulator -> post ONNX) on photographs not used for calibration.

    python benchmarks/deploy_accuracy.py OUTDIR MODEL.onnx "(H, W)" "(mean,)" "(std,)" img1.png,img2.png
"""

import sys, numpy as np, onnxruntime as ort
from PIL import Image
from ember.runtime.accelerator import Accelerator
from ember.runtime.frames import frame_from_rgb
from ember.frontend.samples import Normalization
from ember.interpreters.accuracy_report import cosine
folder, model, shape, mean, std = sys.argv[1], sys.argv[2], eval(sys.argv[3]), eval(sys.argv[4]), eval(sys.argv[5])
names = sys.argv[6].split(",")
accl = Accelerator(folder)
sess = ort.InferenceSession(model)
fmt = accl.npu_inputs[0]["pixel_format"]
cs = []
for n in names:
    rgb = np.asarray(Image.open(f"/work/shared/images/{n}").convert("RGB").resize((shape[1], shape[0]), Image.Resampling.BILINEAR), dtype=np.uint8)
    x = Normalization(mean, std).apply(rgb.astype(np.float32).transpose(2,0,1)[None])
    ref = sess.run(None, {"x": x})[0]
    got = list(accl.run({"x": frame_from_rgb(rgb, fmt) if fmt != "none" else x}).values())[0]
    cs.append(cosine(ref, got)); print(n, cs[-1])
print("mean", np.mean(cs))
