"""Keeps the columns scripts/bench/ncu_groups.py reads of an ncu --csv --page raw file
(kernel name, duration, grid) and gzips it, for docs/results. Usage: ncu_slim.py IN OUT.csv.gz"""
import csv, gzip, sys

KEEP = ["ID", "Kernel Name", "gpu__time_duration.sum", "launch__grid_size"]

def main():
    src, dst = sys.argv[1], sys.argv[2]
    with open(src, newline="") as f:
        rows = list(csv.reader(l for l in f if l.startswith('"')))
    idx = [rows[0].index(k) for k in KEEP]
    with gzip.open(dst, "wt", newline="") as f:
        w = csv.writer(f, quoting=csv.QUOTE_ALL)
        for r in rows:
            w.writerow([r[i] for i in idx])

if __name__ == "__main__":
    main()
