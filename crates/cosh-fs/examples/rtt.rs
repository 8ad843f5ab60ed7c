//! Round trips to a CoshFS service, medians: `stat` and `fstat` (no aggregate work in the
//! service), a small uncached read, a small write (written behind), an allocation and free at
//! the block manager, a cached read as an aggregate of the client's own and as an extent, and
//! a small aggregate write. The service and block manager must be running, e.g. `coshd
//! --socket DIR/host.sock` and `cosh --socket DIR/host.sock fs serve --fs-socket DIR/fs.sock`.
//! Usage: `rtt BLOCK_MANAGER_SOCKET COSHFS_SOCKET [N]`.

use std::time::Instant;

use cosh::{Domain, Options};
use cosh_fs::Client;

fn median(mut v: Vec<u128>) -> f64 {
    v.sort_unstable();
    v[v.len() / 2] as f64 / 1000.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(pool), Some(fs)) = (args.get(1), args.get(2)) else {
        return Err("usage: rtt BLOCK_MANAGER_SOCKET COSHFS_SOCKET [N]".into());
    };
    let n: usize = args.get(3).map_or(Ok(2000), |s| s.parse())?;
    let d = Domain::connect_with(&Options::new("rtt").socket(pool).no_spawn())?;
    let mut c = Client::connect(d, std::path::Path::new(fs))?;
    let f = c.create("/rtt")?;
    c.write_from(f, 0, &[1u8; 4096])?;
    c.set_caching(false);
    let mut buf = [0u8; 4096];
    let mut time = |what: &str, op: &mut dyn FnMut(&mut Client) -> cosh_fs::Result<()>| {
        let mut t = Vec::with_capacity(n);
        for _ in 0..n {
            let s = Instant::now();
            op(&mut c)?;
            t.push(s.elapsed().as_nanos());
        }
        eprintln!("{what:>24}: {:8.1} us median", median(t));
        Ok::<(), cosh_fs::FsError>(())
    };
    time("stat", &mut |c| c.stat("/rtt").map(|_| ()))?;
    time("fstat", &mut |c| c.fstat(f).map(|_| ()))?;
    time("read 4 KiB uncached", &mut |c| {
        c.read_into(f, 0, &mut buf).map(|_| ())
    })?;
    time("write 4 KiB", &mut |c| c.write_from(f, 0, &buf).map(|_| ()))?;
    time("alloc+decref 4 KiB", &mut |c| {
        let d = c.domain();
        let a = d.alloc_unzeroed(4096)?;
        d.decref(a)?;
        Ok(())
    })?;
    time("read_agg 4 KiB cached", &mut |c| {
        c.set_caching(true);
        let a = c
            .read_agg(f, 0, 4096)?
            .ok_or(cosh_fs::FsError::Io("empty".into()))?;
        c.domain().decref(a)?;
        Ok(())
    })?;
    time("read extent 4 KiB cached", &mut |c| {
        c.read(f, 0, 4096).map(|_| ())
    })?;
    time("write 4 KiB aggregate", &mut |c| {
        let a = c.domain().alloc_unzeroed(4096)?;
        c.write(f, 0, a).map(|_| ())
    })?;
    Ok(())
}
