#!/usr/bin/env bash
# Installs the official implementation (torchscale 0.3.0 + fairscale 0.4.0) into .bench-ref/ for
# benchmarks/backbone.py, without their pinned timm (which imports torchvision): torchscale only needs timm's
# drop_path, provided here by a three-line shim. Nothing of this is a dependency of beit3-lightning.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q --no-deps --target .bench-ref torchscale==0.3.0 fairscale==0.4.0
mkdir -p .bench-ref/timm/models/layers
: > .bench-ref/timm/__init__.py
: > .bench-ref/timm/models/__init__.py
cat > .bench-ref/timm/models/layers/__init__.py <<'PY'
def drop_path(x, drop_prob=0.0, training=False):
    if drop_prob == 0.0 or not training:
        return x
    keep = 1 - drop_prob
    return x * x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep) / keep
PY
echo "reference installed in .bench-ref/ (benchmarks/backbone.py finds it there)"
