"""Check: WCI with hutchpp (float32) against the float64 exact WCI on the CIFAR-10 ResNet-18 at PGD inputs.

Run: PYTHONPATH=. /work/venv-curv/bin/python bench/check_wci_resnet18.py (needs pyautoattack and /tmp/fb/foolbox-3.3.4-py3-none-any.whl,
see bench_curvature_resnet18.py)."""
import sys, time, copy; sys.argv=["x"]; sys.path.insert(0, "bench")
import torch
from pathlib import Path
from bench_curvature_resnet18 import load_model, load_images
from genbound.curvature import wci, pgd
torch.set_num_threads(1)
m = load_model(); x,y = load_images(Path("/tmp/fb/foolbox-3.3.4-py3-none-any.whl"))
xa = pgd(m, x, y, eps=8/255, steps=10, seed=0)
ident = lambda model, a, b: a
common = dict(eps=8/255, subset_size=None, attack=ident, batch_size=20, n_train=50000)
t=time.time(); w64 = wci(copy.deepcopy(m).double(), (xa.double(), y), estimator="fisher", **common); t64=time.time()-t
print(f"WCI exact float64 (fisher) {w64.wci:.6g} in {t64:.0f}s", flush=True)
t=time.time(); w = wci(m, (xa, y), estimator="hutchpp", rel_se=0.05, seed=0, **common); tt=time.time()-t
print(f"WCI hutchpp float32 {w.wci:.6g} +- {w.wci_se:.3g} (z {(w.wci-w64.wci)/w.wci_se:+.2f}) in {tt:.0f}s, products {w.protocol['hvp_products']}, converged {all(w.protocol['converged'].values())}", flush=True)
zs=[(a.name, (a.trace_h-b.trace_h)/a.trace_h_se, a.trace_h_se/a.trace_h, a.n_products) for a,b in zip(w.layers, w64.layers)]
for z in zs: print(f"{z[0]:28s} z {z[1]:+.2f} rel.se {z[2]:.2e} products {z[3]}")
print("max |z|", max(abs(z[1]) for z in zs))
