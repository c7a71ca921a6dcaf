#!/usr/bin/env python3
"""One line per kernel launch from an Nsight Compute --csv --print-units base metrics dump (ncu --metrics ... --csv):
launch id, kernel (short name), grid, block, then each metric. Usage: python3 bench/ncu-table.py FILE.csv"""
import csv
import sys

SHORT = {
    'gpu__time_duration.sum': 'us',
    'smsp__inst_executed.sum': 'warp-instr',
    'launch__registers_per_thread': 'regs',
    'sm__warps_active.avg.pct_of_peak_sustained_active': 'occupancy %',
    'dram__throughput.avg.pct_of_peak_sustained_elapsed': 'DRAM %',
}


def main(path: str) -> None:
    header, launches, order = None, {}, []
    for row in csv.reader(open(path, newline='')):
        if row and row[0] == 'ID':
            header = row
            continue
        if header is None or len(row) != len(header):
            continue
        d = dict(zip(header, row))
        name = d['Kernel Name'].split('(')[0].replace('void ', '').replace('<unnamed>::', '')
        key = (d['ID'], name, d['Grid Size'], d['Block Size'])
        if key not in launches:
            launches[key] = {}
            order.append(key)
        v = d['Metric Value'].replace(',', '')
        launches[key][d['Metric Name']] = float(v) / 1000 if d['Metric Name'] == 'gpu__time_duration.sum' else v
    metrics = [m for m in SHORT if any(m in launches[k] for k in order)]
    print(' | '.join(['id', 'kernel', 'grid', 'block'] + [SHORT[m] for m in metrics]))
    for k in order:
        vals = [f'{launches[k][m]:.1f}' if isinstance(launches[k].get(m), float) else str(launches[k].get(m, '')) for m in metrics]
        print(' | '.join(list(k) + vals))


if __name__ == '__main__':
    try:
        main(sys.argv[1])
    except BrokenPipeError:  # piped into head
        sys.stderr.close()
