#!/bin/sh
# Add PneumoView to the desktop's application menu, for this user, from the unpacked app folder:
#     ./install-desktop-entry.sh            (run it from anywhere; it finds the folder it is in)
# It writes ~/.local/share/applications/pneumoview.desktop pointing at this folder's pneumoview-gui, and the icons
# into ~/.local/share/icons/hicolor. Moving the folder later needs a second run. Nothing is written elsewhere.
set -eu
APP=$(cd "$(dirname "$0")" && pwd)
DATA=${XDG_DATA_HOME:-$HOME/.local/share}
mkdir -p "$DATA/applications"
sed -e "s|^Exec=pneumoview-gui|Exec=\"$APP/pneumoview-gui\"|" -e "s|^TryExec=pneumoview-gui|TryExec=$APP/pneumoview-gui|" \
  "$APP/share/applications/pneumoview.desktop" > "$DATA/applications/pneumoview.desktop"
for icon in "$APP"/share/icons/hicolor/*/apps/pneumoview.*; do
  size=$(basename "$(dirname "$(dirname "$icon")")")
  mkdir -p "$DATA/icons/hicolor/$size/apps"
  cp "$icon" "$DATA/icons/hicolor/$size/apps/"
done
update-desktop-database "$DATA/applications" 2>/dev/null || true
echo "PneumoView is in the application menu (entry: $DATA/applications/pneumoview.desktop)"
