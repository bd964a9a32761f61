#!/usr/bin/python3
# bench/query/write_cost.py: WAL bytes and time per tele row written in
# 100-row group commits over 200 interleaved devices, with the core schema
# alone and with db/0002_query.sql (rollup triggers) on top: the write cost
# of the query speed. Run with /usr/bin/python3.
import sqlite3, os, sys, time
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'db') + '/'
def run(with_query):
    p = '/tmp/wamp_%d.db' % with_query
    for s in ('', '-wal', '-shm'):
        try: os.unlink(p + s)
        except FileNotFoundError: pass
    db = sqlite3.connect(p, isolation_level=None)
    db.execute('PRAGMA journal_mode=WAL'); db.execute('PRAGMA wal_autocheckpoint=0')
    db.executescript(open(root + '0001_init.sql').read())
    if with_query:
        db.executescript(open(root + '0002_query.sql').read())
    db.execute('PRAGMA wal_checkpoint(TRUNCATE)')
    ndev, batches, per = 200, 500, 100   # 100-row group commits, interleaved devices
    t0 = time.time(); now = 1_800_000_000; k = 0
    for b in range(batches):
        db.execute('BEGIN')
        for i in range(per):
            d = k % ndev + 1
            db.execute('INSERT INTO tele (device_id, seq, recv_at, model_version, period_s, n_inferences, n_low_conf, n_flagged, n_errors, lat_mean_us, body) VALUES (?,?,?,1,60,50,1,1,0,9000,?)',
                       (d, k // ndev + 1, now + k // 10, b'\xa1' * 64))
            k += 1
        db.execute('COMMIT')
    dt = time.time() - t0
    wal = os.path.getsize(p + '-wal')
    print('query-migration=%d rows=%d wal_bytes_per_row=%.0f insert_us_per_row=%.1f' % (with_query, k, wal / k, dt / k * 1e6))
run(0); run(1)
