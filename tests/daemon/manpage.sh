#!/bin/sh
# tmld_manpage: daemon/tmld.8 renders without a groff warning, and it still
# describes tmld: every option of `tmld --help`, every section of
# config/tmld.conf.example and exit codes 0, 1 and 2 are in it.
# Exit 77 (skipped) without groff.
# usage: manpage.sh SOURCE_DIR TMLD_BINARY
set -u
src=$1
tmld=$2
page=$src/daemon/tmld.8
command -v groff >/dev/null 2>&1 || { echo "no groff: skipped"; exit 77; }
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
fail=0

LC_ALL=C.UTF-8 groff -man -Tutf8 -ww "$page" >"$tmp/utf8" 2>"$tmp/warn"
rc=$?
if [ $rc -ne 0 ] || [ -s "$tmp/warn" ]; then
    echo "groff -man -Tutf8 -ww: exit $rc"
    cat "$tmp/warn"
    fail=1
fi
if command -v man >/dev/null 2>&1; then
    MANWIDTH=80 man --warnings -l "$page" >/dev/null 2>"$tmp/manwarn"
    if [ -s "$tmp/manwarn" ]; then
        echo "man --warnings -l:"
        cat "$tmp/manwarn"
        fail=1
    fi
fi
# No hyphenation and long lines, so that names are whole words.
# Overstrikes (bold, underline) removed without col(1), which may be absent.
bs=$(printf '\010')
GROFF_NO_SGR=1 groff -man -Tascii -rHY=0 -rLL=250n "$page" 2>/dev/null |
    sed "s/.$bs//g" >"$tmp/text"
[ -s "$tmp/text" ] || { echo "empty rendering"; exit 1; }

"$tmld" --help >"$tmp/help" || { echo "tmld --help failed"; exit 1; }
n=0
for opt in $(grep -o -- '--[a-z][a-z-]*' "$tmp/help" | sort -u); do
    n=$((n + 1))
    grep -q -- "$opt" "$tmp/text" || { echo "option $opt not in tmld.8"; fail=1; }
done
[ $n -ge 4 ] || { echo "only $n options found in tmld --help"; fail=1; }
for sec in $(grep -o '^\[[a-z]*\]' "$src/config/tmld.conf.example" | sort -u); do
    grep -qF "$sec" "$tmp/text" || { echo "section $sec not in tmld.8"; fail=1; }
done
for key in $(grep -o '^[a-z_]* =' "$src/config/tmld.conf.example" | cut -d' ' -f1 | sort -u); do
    grep -qw "$key" "$tmp/text" || { echo "key $key not in tmld.8"; fail=1; }
done
for code in 0 1 2; do
    awk '/^EXIT STATUS/,/^EXAMPLES/' "$tmp/text" | grep -Eq "^ +$code( |\$)" ||
        { echo "exit status $code not described"; fail=1; }
done
for sig in SIGTERM SIGHUP; do
    grep -q "$sig" "$tmp/text" || { echo "$sig not described"; fail=1; }
done
[ $fail -eq 0 ] && echo "tmld.8: renders without warnings; $n options, sections, keys, exit codes and signals documented"
exit $fail
