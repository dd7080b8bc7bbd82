#!/usr/bin/env bash
# Re-fetch the vendored JavaScript under _vendor/ from the npm registry: `make vendor`.
# Change a version here, run `make vendor`, then `make browser-test`, and commit _vendor/.
set -euo pipefail
cd "$(dirname "$0")/.."

MATHJAX=3.2.2          # Sphinx 7.4 expects MathJax 3
HTML_MANAGER=1.0.15    # @jupyter-widgets/html-manager for ipywidgets 8.1.x (base 6, controls 5)
REQUIREJS=2.3.8        # the AMD loader that embed-amd.js needs

command -v npm >/dev/null || { echo "npm is needed to fetch the vendored files (Debian: apt-get install npm)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# npm pack checks each tarball against the registry's integrity hash.
(cd "$tmp" && npm pack --silent "mathjax@$MATHJAX" "@jupyter-widgets/html-manager@$HTML_MANAGER" "requirejs@$REQUIREJS" >/dev/null)
for name in mathjax jupyter-widgets-html-manager requirejs; do
  mkdir -p "$tmp/$name" && tar xzf "$tmp/$name"-*.tgz -C "$tmp/$name" --strip-components=1
done

rm -rf _vendor/mathjax _vendor/html-manager _vendor/requirejs
mkdir -p _vendor/mathjax/es5/output/chtml/fonts _vendor/html-manager _vendor/requirejs

# MathJax: the combined TeX+MathML -> CommonHTML component and the fonts it loads.
cp "$tmp/mathjax/es5/tex-mml-chtml.js" _vendor/mathjax/es5/
cp -r "$tmp/mathjax/es5/output/chtml/fonts/woff-v2" _vendor/mathjax/es5/output/chtml/fonts/
cp "$tmp/mathjax/LICENSE" _vendor/mathjax/

# Widgets: embed-amd.js finds its assets next to itself; every browser it supports takes woff2,
# so the eot/ttf/svg/woff copies of the same Font Awesome fonts are left out.
src="$tmp/jupyter-widgets-html-manager/dist"
cp "$src/embed-amd.js" "$src/embed.js.LICENSE.txt" "$src"/*.woff2 _vendor/html-manager/
# The npm package carries no licence file; the ipywidgets wheel (same repository, same
# BSD-3-Clause licence) does, and `make vendor` runs after the venv is set up.
.venv/bin/python - <<'PY'
import importlib.metadata, shutil
dist = importlib.metadata.distribution("ipywidgets")
licence = next(f for f in dist.files if f.name == "LICENSE")
shutil.copy(dist.locate_file(licence), "_vendor/html-manager/LICENSE")
PY

cp "$tmp/requirejs/require.js" _vendor/requirejs/

(cd _vendor && find mathjax html-manager requirejs -type f | LC_ALL=C sort | xargs sha256sum > SHA256SUMS)
echo "vendored: mathjax@$MATHJAX @jupyter-widgets/html-manager@$HTML_MANAGER requirejs@$REQUIREJS"
du -sh _vendor
