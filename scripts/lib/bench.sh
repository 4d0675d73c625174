# Timing helpers shared by the benchmark scripts.
now() { date +%s.%N; }
# rate N T0 T1: N per second between two `now` readings
rate() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { printf "%.0f", n / (b - a) }'; }
