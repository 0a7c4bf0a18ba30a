#!/bin/bash
# Captures the colour, dialog and small/inverted-text fixture screens in this
# directory from a real Xvnc desktop (run once by hand; needs Xvnc, openbox,
# xterm, xmessage, xdotool, ffmpeg). make_reference.py then recomputes the
# scikit-image values.
#
# button_red.png / button_green.png: an xterm "button" whose background is
#   red (255,0,0) on one and green (0,130,0) on the other: the same BT.601 luma
#   (76), so grayscale SSIM sees no change at all.
# dialog_a.png / dialog_a_moved.png / dialog_b.png: an xmessage dialog, the same
#   dialog moved by (37, 23), and a similar dialog with one word changed.
# small_text.png: 7-point text, and white text on black (inverted).
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
xdotool mousemove 0 0
grab() { ffmpeg -loglevel error -y -f x11grab -draw_mouse 0 -video_size 1280x720 -i "$DISPLAY" -frames:v 1 "$out/$1"; }

# Colour: one terminal, background colour 1 (red) then 2 (green).
content="$work/content"
printf 'Deploy to production?\n\n  \033[41;97m   OK   \033[0m  \033[47;30m Cancel \033[0m\n' >"$content"
xterm -fa Monospace -fs 14 -bg white -fg black -xrm 'XTerm*color1: #ff0000' -xrm 'XTerm*color2: #008200' \
  -geometry 40x6+100+100 -e bash -c \
  'old=; while :; do new=$(cat "$0"); if [ "$new" != "$old" ]; then printf "\033[?25l\033[H\033[2J%s" "$new"; old=$new; fi; sleep 0.05; done' "$content" &
pids+=($!)
term_pid=$!
timeout 10 xdotool search --sync --onlyvisible --pid "$term_pid" >/dev/null
sleep 1.5
grab button_red.png
sed -i 's/\[41;/[42;/' "$content"; sleep 0.6
grab button_green.png
kill "$term_pid"; sleep 0.5

# Dialogs.
xmessage -geometry +300+200 -buttons Delete,Cancel "Delete the file report-2024.txt?" & pids+=($!)
dialog=$!
timeout 10 xdotool search --sync --onlyvisible --class Xmessage >/dev/null
sleep 1
grab dialog_a.png
win=$(xdotool search --onlyvisible --class Xmessage | head -1)
xdotool windowmove "$win" 337 223; sleep 0.8
grab dialog_a_moved.png
kill "$dialog"; sleep 0.5
xmessage -geometry +300+200 -buttons Delete,Cancel "Delete the file report-2025.txt?" & pids+=($!)
dialog=$!
timeout 10 xdotool search --sync --onlyvisible --class Xmessage >/dev/null
sleep 1
grab dialog_b.png
kill "$dialog"; sleep 0.5

# Small and inverted text.
xterm -fa Monospace -fs 7 -bg white -fg black -geometry 60x4+40+40 -e bash -c \
  'printf "\033[?25lBuild 2024.11.3 finished in 42 s\nSMALL-TEXT line 7: ok\n"; sleep 600' & pids+=($!)
xterm -fa Monospace -fs 11 -bg black -fg white -geometry 40x3+40+200 -e bash -c \
  'printf "\033[?25lINVERTED-TEXT ready\n"; sleep 600' & pids+=($!)
sleep 2
grab small_text.png
ls -l "$out"/*.png
