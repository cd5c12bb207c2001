#!/usr/bin/env bash
# CI check that the built library really contains sparse tensor-core code:
# disassembles the library's SASS for each CUDA arch and fails unless the
# structured-sparse MMA instruction (HMMA.SP.* for fp16/bf16, e.g.
# HMMA.SP.16832.F32.BF16; IMMA.SP.* would count too) appears in every arch.
# Needs no GPU: cuobjdump + nvdisasm only.
#
# usage: scripts/check_sass.sh [--arch 80 --arch 90] [--require REGEX]... [LIBRARY]
#   LIBRARY      the .so to check; default: the installed package's
#                (python -c "import llmpack._lib as l; print(l.LIBRARY_PATH)")
#   --arch N     check sm_N (repeatable; default 80 and 90)
#   --require R  also fail unless, in every arch, some kernel whose name
#                matches the Python regex R contains a sparse MMA (the name as
#                c++filt demangles it; CUTLASS's deepest types defeat c++filt
#                and stay mangled, so match e.g. 'SparseGemm' or your kernel's
#                plain name)
#   --require-mma M:K  also fail unless, in every arch, some kernel whose name
#                matches the regex K contains an instruction whose mnemonic
#                matches the regex M (any MMA, not only sparse: e.g.
#                'BMMA\.168256\.AND\.POPC:btc' for the binary tensor-core core)
#   --full       print full demangled kernel names
# env: PYTHON (default python3), CUOBJDUMP (path to cuobjdump), NVDISASM_PATH
#      (folder holding nvdisasm; cuobjdump reads it). Without them, cuobjdump is
#      looked for on PATH, in CUDA_HOME/bin, /usr/local/cuda*/bin and the
#      nvidia-cuda-* wheels of $PYTHON; nvdisasm beside cuobjdump, then on PATH.
#
# Output: one line per arch, e.g.
#   sm_80: OK  192 sparse MMA (HMMA.SP.16832.F32 x96, HMMA.SP.16832.F32.BF16 x96) in 4/11 kernels
# followed by one indented line per kernel that has any (count, short name).
# Exit: 0 all archs OK, 1 a check failed, 2 tools/library not found.
set -euo pipefail

PYTHON=${PYTHON:-python3}
archs=()
requires=()
require_mma=""
full=0
lib=""
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) archs+=("${2#sm_}"); shift 2 ;;
    --require) requires+=("$2"); shift 2 ;;
    --require-mma) require_mma+="$2"$'\n'; shift 2 ;;
    --full) full=1; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    -*) echo "check_sass: unknown option $1" >&2; exit 2 ;;
    *) lib="$1"; shift ;;
  esac
done
[ ${#archs[@]} -gt 0 ] || archs=(80 90)

die() { echo "check_sass: $*" >&2; exit 2; }

# --- the library -------------------------------------------------------------
if [ -z "$lib" ]; then
  lib=$("$PYTHON" -c "import llmpack._lib as l; print(l.LIBRARY_PATH)" 2>/dev/null) ||
    die "no library given and 'import llmpack._lib' failed with $PYTHON (install the package or pass the .so)"
fi
[ -f "$lib" ] || die "library not found: $lib"

# --- cuobjdump and nvdisasm ------------------------------------------------------
wheel_bins() {  # bin folders of the nvidia CUDA wheels installed for $PYTHON
  "$PYTHON" - <<'EOF' 2>/dev/null || true
import glob, os
try:
    import nvidia
    for root in nvidia.__path__:
        for d in sorted(glob.glob(os.path.join(root, "*", "bin"))):
            print(d)
except Exception:
    pass
EOF
}
candidates() {
  [ -n "${CUDA_HOME:-}" ] && echo "$CUDA_HOME/bin"
  echo /usr/local/cuda/bin
  ls -d /usr/local/cuda-*/bin 2>/dev/null | sort -rV || true
  wheel_bins
}

cuobjdump=${CUOBJDUMP:-}
if [ -z "$cuobjdump" ]; then
  cuobjdump=$(command -v cuobjdump || true)
  if [ -z "$cuobjdump" ]; then
    while read -r d; do
      if [ -x "$d/cuobjdump" ]; then cuobjdump="$d/cuobjdump"; break; fi
    done < <(candidates)
  fi
fi
[ -n "$cuobjdump" ] && [ -x "$cuobjdump" ] ||
  die "cuobjdump not found (set CUOBJDUMP, put it on PATH, or pip install nvidia-cuda-cuobjdump)"

if [ -n "${NVDISASM_PATH:-}" ]; then
  # cuobjdump wants the folder; accept the binary's path too.
  [ -f "$NVDISASM_PATH" ] && NVDISASM_PATH=$(dirname "$NVDISASM_PATH")
  [ -x "$NVDISASM_PATH/nvdisasm" ] || die "NVDISASM_PATH=$NVDISASM_PATH holds no nvdisasm"
else
  cdir=$(dirname "$(readlink -f "$cuobjdump")")
  if [ -x "$cdir/nvdisasm" ]; then
    NVDISASM_PATH=$cdir
  elif command -v nvdisasm >/dev/null; then
    NVDISASM_PATH=$(dirname "$(command -v nvdisasm)")
  else
    NVDISASM_PATH=""
    while read -r d; do
      if [ -x "$d/nvdisasm" ]; then NVDISASM_PATH=$d; break; fi
    done < <(candidates)
  fi
  [ -n "$NVDISASM_PATH" ] || die "nvdisasm not found (cuobjdump needs it for -sass): set NVDISASM_PATH to its folder"
fi
export NVDISASM_PATH

echo "check_sass: $lib"
echo "check_sass: $cuobjdump (nvdisasm in $NVDISASM_PATH)"

# --- per arch ------------------------------------------------------------------
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
for a in "${archs[@]}"; do
  sass="$tmp/sm_$a.sass"
  if ! "$cuobjdump" -arch "sm_$a" -sass "$lib" >"$sass" 2>"$tmp/err"; then
    echo "sm_$a: FAIL cuobjdump failed: $(head -c 300 "$tmp/err")"
    status=1
    continue
  fi
  set +e
  FULL=$full REQUIRE_MMA=$require_mma "$PYTHON" - "$sass" "sm_$a" "${requires[@]}" <<'EOF'
import collections, re, shutil, subprocess, sys, os

path, arch, requires = sys.argv[1], sys.argv[2], sys.argv[3:]
full = os.environ.get("FULL") == "1"
# A sparse MMA: an *MMA mnemonic with an .SP component (HMMA.SP.16832.F32.BF16,
# IMMA.SP..., HGMMA...SP...).
sparse = re.compile(r"^\s*/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z]*MMA(?:\.\w+)*?\.SP(?:\.\w+)*)\b")
any_mma = re.compile(r"^\s*/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z]*MMA(?:\.\w+)*)\b")
func_re = re.compile(r"^\s*Function\s*:\s*(\S+)")
code_re = re.compile(r"^\s*code for (sm_\w+)")

per_kernel = collections.Counter()
mma_by_kernel = collections.defaultdict(collections.Counter)   # every *MMA mnemonic, per kernel
mnemonics = collections.Counter()
kernels, arch_seen, current = set(), False, None
with open(path, errors="replace") as f:
    for line in f:
        m = code_re.match(line)
        if m:
            arch_seen |= m.group(1) == arch
            continue
        m = func_re.match(line)
        if m:
            current = m.group(1)
            kernels.add(current)
            continue
        m = any_mma.match(line)
        if m and current:
            mma_by_kernel[current][m.group(1)] += 1
        m = sparse.match(line)
        if m and current:
            per_kernel[current] += 1
            mnemonics[m.group(1)] += 1

def demangle(names):
    tool = shutil.which("c++filt")
    if not tool or not names:
        return {n: n for n in names}
    out = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()
    return dict(zip(names, out)) if len(out) == len(names) else {n: n for n in names}

def strip_params(name):
    """Drops the trailing (parameter list) of a demangled function name."""
    if not name.endswith(")"):
        return name
    depth = 0
    for i in range(len(name) - 1, -1, -1):
        depth += {")": 1, "(": -1}.get(name[i], 0)
        if depth == 0:
            return name[:i]
    return name

def leading_names(mangled, count=5):
    """First source names of an Itanium-mangled name that c++filt could not
    demangle (binutils gives up on some deep CUTLASS types): enough to say
    what the kernel is, e.g. cutlass, Kernel, gemm, kernel, SparseGemm."""
    out, i = [], 3 if mangled.startswith("_ZN") else 2
    while i < len(mangled) and len(out) < count:
        m = re.match(r"(\d+)", mangled[i:])
        if m:
            n, i = int(m.group(1)), i + len(m.group(1))
            out.append(mangled[i:i + n])
            i += n
        elif mangled[i] in "IN":
            i += 1
        elif (m := re.match(r"S[0-9A-Z]*_", mangled[i:])):
            i += len(m.group(0))
        else:
            break
    return out

def short(name):
    """Template arguments below the first level become <...>; the first tile
    shape and element type are appended, which tell CUTLASS kernels apart."""
    if full:
        return name
    if name.startswith("_Z"):  # not demangled
        ids = leading_names(name)
        shape = re.search(r"GemmShapeILi(\d+)ELi(\d+)ELi(\d+)E", name)
        elem = re.search(r"(half_t|bfloat16_t|tfloat32_t|__half|__nv_bfloat16)", name)
        extra = ([f"GemmShape<{shape.group(1)},{shape.group(2)},{shape.group(3)}>"] if shape else []) + \
                ([elem.group(1)] if elem else [])
        head = "::".join(ids[:2]) + ("<" + "::".join(ids[2:]) + "<...>>" if len(ids) > 2 else "")
        return head + (" [" + ", ".join(extra) + "]" if extra else "")
    out, depth = [], 0
    for ch in strip_params(name):
        if ch == "<":
            depth += 1
            if depth <= 2:
                out.append("<" if depth == 1 else "<...")
        elif ch == ">":
            if depth <= 2:
                out.append(">")
            depth -= 1
        elif depth <= 1:
            out.append(ch)
    extra = [x.group(0).replace(" ", "") for x in (re.search(r"GemmShape<[^<>]*>", name),
             re.search(r"\b(half_t|bfloat16_t|__half|__nv_bfloat16)\b", name)) if x]
    return "".join(out) + (" [" + ", ".join(extra) + "]" if extra else "")

total = sum(per_kernel.values())
names = demangle(sorted(kernels))
missing = [r for r in requires if not any(re.search(r, names[k]) for k in per_kernel)]
mma_missing, mma_found = [], []
for req in filter(None, os.environ.get("REQUIRE_MMA", "").split("\n")):
    mnem, _, kern = req.rpartition(":")
    hits = {k: sum(v for mn, v in mma_by_kernel[k].items() if re.search(mnem, mn))
            for k in kernels if re.search(kern, names[k])}
    hits = {k: v for k, v in hits.items() if v}
    (mma_found if hits else mma_missing).append((req, hits))
ok = arch_seen and total > 0 and not missing and not mma_missing
detail = ", ".join(f"{k} x{v}" for k, v in sorted(mnemonics.items()))
if not arch_seen:
    print(f"{arch}: FAIL no {arch} SASS in the library (was it built for {arch}?)")
else:
    print(f"{arch}: {'OK  ' if ok else 'FAIL'} {total} sparse MMA ({detail or 'none'}) in "
          f"{len(per_kernel)}/{len(kernels)} kernels"
          + (f"; no sparse-MMA kernel matches {missing}" if missing else ""))
for k, v in sorted(per_kernel.items(), key=lambda kv: names[kv[0]]):
    print(f"    {v:5d}  {short(names[k])}")
for req, hits in mma_found:
    print(f"{arch}: OK   {sum(hits.values())} instructions matching {req!r} in {len(hits)} kernels")
    for k, v in sorted(hits.items(), key=lambda kv: names[kv[0]]):
        print(f"    {v:5d}  {short(names[k])}")
for req, _ in mma_missing:
    print(f"{arch}: FAIL no kernel matches {req!r} (mnemonic:kernel regexes)")
sys.exit(0 if ok else 1)
EOF
  rc=$?
  set -e
  [ $rc -eq 0 ] || status=1
done
exit $status
