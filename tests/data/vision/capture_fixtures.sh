#!/bin/bash
# Captures the SSIM fixture screens in this directory from a real Xvnc desktop.
# Run once by hand (needs Xvnc, openbox, xterm, galculator, xdotool, ffmpeg);
# then run make_reference.py to recompute the scikit-image reference scores.
set -euo pipefail
out=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

Xvnc -displayfd 3 -rfbport -1 -SecurityTypes None -geometry 1280x720 -depth 24 \
  -AlwaysShared -nolisten tcp 3>"$work/display" 2>"$work/xvnc.log" &
pids+=($!)
for _ in $(seq 50); do [ -s "$work/display" ] && break; sleep 0.1; done
export DISPLAY=:$(head -1 "$work/display")
openbox 2>/dev/null & pids+=($!)
for _ in $(seq 50); do xprop -root _NET_SUPPORTING_WM_CHECK | grep -q 'window id' && break; sleep 0.1; done

# The terminal redraws the content file whenever it changes (cursor hidden).
content="$work/content"
printf 'The quick brown fox jumps over 13 lazy dogs\nSMOKE-TEST line 42: ready\n\033[31mStatus: colour line\033[0m\n' >"$content"
xterm -fa Monospace -fs 14 -geometry 60x10+40+40 -e bash -c \
  'old=; while :; do new=$(cat "$0"); if [ "$new" != "$old" ]; then printf "\033[?25l\033[H\033[2J%s" "$new"; old=$new; fi; sleep 0.05; done' "$content" &
pids+=($!)
term_pid=$!
galculator 2>/dev/null & pids+=($!)
term=$(timeout 10 xdotool search --sync --onlyvisible --pid "$term_pid" | head -1)
timeout 10 xdotool search --sync --onlyvisible --class galculator >/dev/null
sleep 1.5

grab() { ffmpeg -loglevel error -y -f x11grab -draw_mouse 0 -video_size 1280x720 -i "$DISPLAY" -frames:v 1 "$out/$1"; }
grab screen_base.png
sleep 0.3
grab screen_base_again.png
sed -i 's/line 42:/line 43:/' "$content"; sleep 0.6
grab screen_one_char.png
sed -i 's/line 43:/line 42:/; s/\[31m/[34m/' "$content"; sleep 0.6
grab screen_colour.png
sed -i 's/\[34m/[31m/' "$content"; sleep 0.6
xdotool windowmove --sync "$term" 60 40 2>/dev/null || xdotool windowmove "$term" 60 40
sleep 0.6
grab screen_moved.png
ls -l "$out"/*.png
