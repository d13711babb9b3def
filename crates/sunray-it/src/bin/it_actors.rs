//! Actor scenarios for the integration tests: each prints what the test checks, one
//! fact per line.

use std::time::Duration;

use sunray::{ActorHandle, ActorOptions};

pub struct Counter {
    n: u64,
    log: Vec<u64>,
}

#[sunray::actor]
impl Counter {
    pub fn new(start: u64) -> Self {
        Counter {
            n: start,
            log: Vec::new(),
        }
    }

    pub fn incr(&mut self, by: u64) -> u64 {
        self.n += by;
        self.log.push(by);
        self.n
    }

    /// The arguments of every call so far, in the order they ran.
    pub fn log(&self) -> Vec<u64> {
        self.log.clone()
    }

    /// Where the actor lives: node ip, pid, CUDA_VISIBLE_DEVICES.
    pub fn whereabouts(&self) -> (String, u32, String) {
        (
            sunray::get_runtime_context().node_ip,
            std::process::id(),
            std::env::var("CUDA_VISIBLE_DEVICES").unwrap_or_default(),
        )
    }

    pub fn incr_slowly(&mut self, by: u64, seconds: f64) -> u64 {
        std::thread::sleep(Duration::from_secs_f64(seconds));
        self.incr(by)
    }

    pub fn crash(&mut self) -> u64 {
        std::process::exit(7)
    }

    pub fn fails(&self, why: String) -> Result<u64, String> {
        Err(why)
    }

    /// The size of what it was sent, and its count so far.
    pub fn weigh(&mut self, data: Vec<u8>) -> (u64, u64) {
        self.n += 1;
        (data.len() as u64, self.n)
    }
}

pub struct Picky;

#[sunray::actor]
impl Picky {
    pub fn new(ok: bool) -> Self {
        assert!(ok, "constructor refused its argument");
        Picky
    }

    pub fn ping(&self) -> String {
        "pong".into()
    }
}

/// A task that is given a handle and carries it back.
#[sunray::remote]
fn carry(h: ActorHandle<Counter>) -> u64 {
    h.id()
}

/// Calls the actor it is given `times` times from inside a task.
#[sunray::remote]
fn bump(h: ActorHandle<Counter>, times: u64) -> u64 {
    let mut last = 0;
    for _ in 0..times {
        last = h.incr(1).remote().get().unwrap();
    }
    last
}

#[sunray::remote]
fn shout(word: String, times: u64) {
    for i in 0..times {
        println!("{word} {i}");
    }
}

#[sunray::remote]
fn where_am_i() -> String {
    std::thread::sleep(Duration::from_millis(50));
    sunray::get_runtime_context().node_ip
}

/// Recursive tasks: each waits for the two it submits (its CPU lent meanwhile).
#[sunray::remote]
fn fib(n: u64) -> u64 {
    if n < 2 {
        return n;
    }
    let a = fib.remote(n - 1);
    let b = fib.remote(n - 2);
    a.get().unwrap() + b.get().unwrap()
}

/// Puts a value and hands its ref to a task of its own, from inside a task.
#[sunray::remote]
fn put_and_pass(n: u64) -> u64 {
    let r = sunray::put(&n).unwrap();
    fib.remote(&r).get().unwrap()
}

fn main() {
    sunray::init().expect("init");
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    match arg(1).as_str() {
        "direct" => {
            // The first call goes through the head, which says where the actor lives;
            // the next ones go to its node (the test watches the head's traffic).
            let calls: u64 = arg(2).parse().unwrap();
            // One CPU: on a node of its own, not in the head's process.
            let c = Counter::options(ActorOptions::new().num_cpus(1.0)).remote(0);
            assert_eq!(c.incr(1).remote().get().unwrap(), 1);
            println!("READY");
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).unwrap();
            let mut sent = 0;
            for i in 0..calls {
                let (len, n) = c.weigh(vec![7; 1024]).remote().get().unwrap();
                assert_eq!((len, n), (1024, i + 2), "call {i}");
                sent += len;
            }
            // Many in flight at once keep their order.
            let refs: Vec<_> = (0..calls)
                .map(|_| c.weigh(vec![1; 1024]).remote())
                .collect();
            let got = sunray::get_all(&refs).unwrap();
            let counts: Vec<u64> = got.iter().map(|(_, n)| *n).collect();
            assert_eq!(counts, (calls + 2..2 * calls + 2).collect::<Vec<_>>());
            println!("CALLED {} {sent}", 2 * calls);
        }
        "order" => {
            // Many calls in flight at once run in submission order, on one instance.
            let c = Counter::remote(100);
            let refs: Vec<_> = (1..=200u64).map(|i| c.incr(i).remote()).collect();
            let got = sunray::get_all(&refs).unwrap();
            let mut expect = 100;
            for (i, v) in got.iter().enumerate() {
                expect += i as u64 + 1;
                assert_eq!(*v, expect, "call {i}");
            }
            let log = c.log().remote().get().unwrap();
            assert_eq!(log, (1..=200).collect::<Vec<_>>());
            println!("ORDERED {}", got.len());
            let e = c.fails("nope 17".to_string()).remote().get().unwrap_err();
            println!("ERR {e}");
            println!("AFTER_ERR {}", c.incr(1).remote().get().unwrap());
            let back = carry.remote(c.clone()).get().unwrap();
            println!("HANDLE_TRAVELS {}", back == c.id());
        }
        "hold" => {
            // An actor holding 1 CPU and a GPU: what the cluster has left, what it sees.
            let c = Counter::options(ActorOptions::new().num_cpus(1.0).num_gpus(1.0)).remote(0);
            let (ip, pid, cvd) = c.whereabouts().remote().get().unwrap();
            println!("ACTOR {ip} {pid} [{cvd}]");
            let avail = sunray::available_resources().unwrap();
            println!(
                "AVAILABLE CPU={} GPU={}",
                avail.get("CPU").copied().unwrap_or(0.0),
                avail.get("GPU").copied().unwrap_or(0.0)
            );
            c.kill().unwrap();
            let e = c.incr(1).remote().get().unwrap_err();
            println!("KILLED {e}");
        }
        "restart" => {
            // Restarts once after its process dies; a call its death cut short fails
            // (no task retries), later ones run on the new process.
            let c = Counter::options(ActorOptions::new().max_restarts(1)).remote(5);
            let (_, pid1, _) = c.whereabouts().remote().get().unwrap();
            println!("CRASH {}", c.crash().remote().get().unwrap_err());
            // The constructor ran again: state starts over at 5.
            println!("AFTER_RESTART {}", c.incr(1).remote().get().unwrap());
            let (_, pid2, _) = c.whereabouts().remote().get().unwrap();
            println!("NEW_PROCESS {}", pid1 != pid2);
            // No restarts left: the second crash is final.
            println!("CRASH2 {}", c.crash().remote().get().unwrap_err());
            println!("LATER {}", c.incr(1).remote().get().unwrap_err());
        }
        "node" => {
            // Lives on a node the test kills; later calls succeed on its restart.
            let c = Counter::options(
                ActorOptions::new()
                    .num_cpus(1.0)
                    .max_restarts(-1)
                    .max_task_retries(-1),
            )
            .remote(0);
            let (ip, _, _) = c.whereabouts().remote().get().unwrap();
            c.incr(1).remote().get().unwrap();
            // Sent before its node dies, answered by the restarted actor (retried).
            let slow = c.incr_slowly(3, 2.0).remote();
            println!("LIVES {ip}");
            use std::io::Write;
            std::io::stdout().flush().unwrap();
            let v = slow.get().unwrap();
            let (ip2, _, _) = c.whereabouts().remote().get().unwrap();
            println!("AFTER {v} {ip2}");
        }
        "detached" => {
            let name = arg(2);
            let c = Counter::options(ActorOptions::new().name(&name).detached()).remote(40);
            println!("CREATED {}", c.incr(1).remote().get().unwrap());
            let again = Counter::options(ActorOptions::new().name(&name)).remote(0);
            println!("DUPLICATE {}", again.ready().unwrap_err());
        }
        "find" => {
            let name = arg(2);
            let c: ActorHandle<Counter> = sunray::get_actor(&name).unwrap();
            println!("FOUND {}", c.incr(1).remote().get().unwrap());
            c.kill().unwrap();
            let gone = sunray::get_actor_within::<Counter>(&name, None);
            // The kill is asynchronous; the name goes once the head buried the actor.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            let mut gone = gone.is_err();
            while !gone && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
                gone = sunray::get_actor::<Counter>(&name).is_err();
            }
            println!("GONE {gone}");
        }
        "ctor" => {
            let p = Picky::remote(false);
            println!("READY {}", p.ready().unwrap_err());
            println!("CALL {}", p.ping().remote().get().unwrap_err());
            println!("OK {}", Picky::remote(true).ping().remote().get().unwrap());
        }
        "nested" => {
            let n: u64 = arg(2).parse().unwrap_or(15);
            let t = std::time::Instant::now();
            println!("FIB {}", fib.remote(n).get().unwrap());
            eprintln!("fib({n}) took {:.2} s", t.elapsed().as_secs_f64());
            println!("PUT_IN_TASK {}", put_and_pass.remote(10).get().unwrap());
            // Two tasks call one actor, 50 times each, while the driver calls it too.
            let c = Counter::remote(0);
            let a = bump.remote(c.clone(), 50);
            let b = bump.remote(c.clone(), 50);
            let mine: Vec<_> = (0..50).map(|_| c.incr(1).remote()).collect();
            sunray::get_all(&mine).unwrap();
            let (a, b) = (a.get().unwrap(), b.get().unwrap());
            println!("BUMPED {}", c.log().remote().get().unwrap().len());
            println!("LAST_SEEN_MAX {}", a.max(b) <= 150);
        }
        "chatty" => {
            // A detached actor that outlives this driver, and a task that prints.
            let c = Counter::options(ActorOptions::new().name("talker").detached()).remote(0);
            c.incr(1).remote().get().unwrap();
            shout.remote("HELLO-LOG-LINE".to_string(), 3).get().unwrap();
            println!("DONE");
        }
        "groups" => {
            use sunray::{PlacementStrategy as S, Resources, TaskOptions};
            let cpus = |n: f64| Resources {
                cpu: n,
                ..Default::default()
            };
            let ips_of = |pg: &sunray::PlacementGroup, n: usize| -> Vec<String> {
                let refs: Vec<_> = (0..n)
                    .map(|i| {
                        where_am_i
                            .options(
                                TaskOptions::new()
                                    .num_cpus(1.0)
                                    .in_bundle(pg.bundle(Some(i))),
                            )
                            .remote()
                    })
                    .collect();
                sunray::get_all(&refs).unwrap()
            };
            let pack = sunray::placement_group(vec![cpus(1.0); 2], S::Pack).unwrap();
            assert!(pack.wait(Duration::from_secs(10)).unwrap());
            println!("PACK {}", ips_of(&pack, 2).join(" "));
            pack.remove().unwrap();
            let spread = sunray::placement_group(vec![cpus(1.0); 3], S::Spread).unwrap();
            assert!(spread.wait(Duration::from_secs(10)).unwrap());
            println!("SPREAD {}", ips_of(&spread, 3).join(" "));
            spread.remove().unwrap();
            let strict = sunray::placement_group(vec![cpus(2.0); 3], S::StrictSpread).unwrap();
            assert!(strict.wait(Duration::from_secs(10)).unwrap());
            println!("STRICT_SPREAD {}", ips_of(&strict, 3).join(" "));
            // It holds every CPU: a task outside it waits, and runs once it is removed.
            let outside = where_am_i.remote();
            let waited = outside.get_timeout(Some(Duration::from_millis(500)));
            println!(
                "OUTSIDE_WAITS {}",
                matches!(waited, Err(sunray::Error::Timeout))
            );
            // An actor in bundle 1 lives on that bundle's node.
            let c = Counter::options(
                ActorOptions::new()
                    .num_cpus(1.0)
                    .in_bundle(strict.bundle(Some(1))),
            )
            .remote(0);
            let (ip, _, _) = c.whereabouts().remote().get().unwrap();
            println!("ACTOR_IN_BUNDLE {}", ip == ips_of(&strict, 3)[1]);
            strict.remove().unwrap();
            println!(
                "OUTSIDE_RUNS {}",
                outside.get_timeout(Some(Duration::from_secs(10))).is_ok()
            );
            println!("ACTOR_AFTER_REMOVE {}", c.incr(1).remote().get().is_err());
            // More bundles than nodes, each on its own node: it never fits.
            let never = sunray::placement_group(vec![cpus(1.0); 4], S::StrictSpread).unwrap();
            println!(
                "INFEASIBLE_READY {}",
                never.wait(Duration::from_secs(1)).unwrap()
            );
            let bad = where_am_i
                .options(TaskOptions::new().in_bundle(never.bundle(Some(7))))
                .remote()
                .get();
            println!("BAD_BUNDLE {}", bad.unwrap_err());
        }
        other => {
            eprintln!("unknown scenario {other:?}");
            std::process::exit(2);
        }
    }
}
