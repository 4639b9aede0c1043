#!/usr/bin/env bash
# Creates or updates the virtualenv for the Python package (python/) and its tests, and prints
# its path on stdout (everything else goes to stderr), so: venv="$(scripts/setup-python.sh)".
#
# The venv lives outside the checkout, in ${FEATHERSTORE_VENV:-$HOME/.cache/featherstore/venv},
# so that CI and developers reuse it between runs, like cargo's target directory. Idempotent: a
# second run only reinstalls the featherstore package itself (a few seconds) unless this script,
# python/pyproject.toml or the Python version changed.
#
# Frameworks (FEATHERSTORE_FRAMEWORKS, default "torch tensorflow ray"; "" for none):
# - torch: the PyPI wheel. PyPI has no CPU-only Linux x86_64 torch wheel (the CPU builds live
#   on PyTorch's own index, which is not reachable here), and the PyPI wheel (539 MB) does not
#   import without its nvidia-*/cuda-toolkit wheels: libtorch_cuda.so, libtorch_python.so and
#   even libtorch_cpu.so link libcudart/libcublas/libcudnn/libcupti... at load time. So it comes
#   with them: 2.8 GB downloaded (~2 min), 5.3 GB installed. Debian's python3-torch was
#   rejected: torch 1.13 (2022), 186 Debian packages, for Debian's own python3.11, and built
#   against numpy 1.x while pandas 3 and TensorFlow 2.21 install numpy 2.
# - tensorflow: tensorflow-cpu (274 MB wheel), which provides the same `tensorflow` module.
# - ray: ray[data] (79 MB wheel).
# Measured on a 2-core machine with an empty venv and no pip cache: 2 min 55 s in all, a
# 7.5 GB venv; a second run takes ~2 s. Versions are pinned so every machine gets the same set.
set -euo pipefail

repo_dir="$(cd "$(dirname "$0")/.." && pwd)"
venv="${FEATHERSTORE_VENV:-${HOME}/.cache/featherstore/venv}"
python="${FEATHERSTORE_PYTHON:-python3}"
frameworks="${FEATHERSTORE_FRAMEWORKS-torch tensorflow ray}"

torch_req="torch==2.15.0"
tensorflow_req="tensorflow-cpu==2.21.0"
ray_req="ray[data]==2.60.0"

log() { echo "setup-python: $*" >&2; }

requirements=("${repo_dir}/python[test,pandas,polars]")
for framework in ${frameworks}; do
  case "${framework}" in
    torch) requirements+=("${torch_req}") ;;
    tensorflow) requirements+=("${tensorflow_req}") ;;
    ray) requirements+=("${ray_req}") ;;
    *) log "unknown framework '${framework}' in FEATHERSTORE_FRAMEWORKS (torch, tensorflow, ray)"; exit 2 ;;
  esac
done

stamp_file="${venv}/.featherstore-setup"
stamp="$(
  {
    cat "$0" "${repo_dir}/python/pyproject.toml"
    "${python}" -c 'import sys; print(sys.version)'
    echo "${frameworks}"
  } | sha256sum | cut -d' ' -f1
)"

export PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_NO_INPUT=1

if [ ! -x "${venv}/bin/python" ] || ! "${venv}/bin/python" -c 'import sys' 2>/dev/null; then
  log "creating ${venv}"
  rm -rf "${venv}"
  mkdir -p "$(dirname "${venv}")"
  "${python}" -m venv "${venv}"
  "${venv}/bin/python" -m pip install --quiet --upgrade pip "setuptools>=77" wheel >&2
fi

if [ "$(cat "${stamp_file}" 2>/dev/null || true)" != "${stamp}" ]; then
  log "installing ${requirements[*]} (frameworks: ${frameworks:-none})"
  started=$(date +%s)
  # No pip cache: the venv is the cache, and the torch wheels would double the disk use.
  "${venv}/bin/python" -m pip install --quiet --no-cache-dir --progress-bar off "${requirements[@]}" >&2
  log "dependencies installed in $(( $(date +%s) - started ))s; venv size $(du -sh "${venv}" | cut -f1)"
  echo "${stamp}" > "${stamp_file}"
fi

# Always reinstall the package itself so that the venv runs the checkout's code.
"${venv}/bin/python" -m pip install --quiet --no-deps --no-build-isolation --force-reinstall \
  "${repo_dir}/python" >&2
rm -rf "${repo_dir}/python/build" "${repo_dir}/python/src/featherstore.egg-info"

echo "${venv}"
