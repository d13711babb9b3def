//! How many guesses of the token the dashboard answers: a few per client address, then
//! one per `per_client_every`; and, over all addresses together, a larger burst, then one
//! per `total_every` (so that many addresses cannot guess faster than that either).
//!
//! Each bucket is a GCRA ("generic cell rate") meter: it keeps the time at which it will
//! have paid back every attempt it let through. An attempt adds one interval of debt and
//! is let through while the debt stays within `burst` intervals; a refused one is told
//! to come back when one interval has been paid back, so nobody, the holder of the right
//! token included, waits longer than the longer of the two intervals after the
//! guessing stops. Every attempt is charged when it is let through (before the token is
//! compared, so concurrent guesses cannot overdraw the budget); an attempt that proved
//! the token is given back its charge.
//!
//! Pure: the caller passes the time in; nothing here reads a clock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The budget of attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Attempts one client address may make at once.
    pub per_client_burst: u32,
    /// Then one more each this often.
    pub per_client_every: Duration,
    /// Attempts all clients together may make at once.
    pub total_burst: u32,
    /// Then one more each this often.
    pub total_every: Duration,
}

impl Default for Limits {
    /// 10 guesses, then one per 6 s per address; 30, then one per second in total
    /// (86,400 a day at most against a token of at least 16 characters).
    fn default() -> Self {
        Limits {
            per_client_burst: 10,
            per_client_every: Duration::from_secs(6),
            total_burst: 30,
            total_every: Duration::from_secs(1),
        }
    }
}

/// One GCRA meter: `paid_at` is when its debt will be back to zero.
#[derive(Debug, Clone, Copy, Default)]
struct Meter {
    paid_at: Option<Instant>,
}

impl Meter {
    fn debt(&self, now: Instant) -> Duration {
        self.paid_at
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(now))
    }

    /// How long until an attempt fits (zero: it fits now).
    fn wait(&self, now: Instant, burst: u32, every: Duration) -> Duration {
        (self.debt(now) + every).saturating_sub(every * burst)
    }

    fn charge(&mut self, now: Instant, every: Duration) {
        self.paid_at = Some(now + self.debt(now) + every);
    }

    fn refund(&mut self, now: Instant, every: Duration) {
        let debt = self.debt(now).saturating_sub(every);
        self.paid_at = (!debt.is_zero()).then(|| now + debt);
    }
}

/// Client addresses tracked before the paid-up ones are forgotten. Every tracked
/// address owes for an attempt the total meter let through, so at most
/// `total_burst + per_client_every * per_client_burst / total_every` are ever owing
/// (90 with the defaults): the map stays small whatever the traffic.
const PRUNE_ABOVE: usize = 256;

/// The attempts to prove the token, per client address and in total.
#[derive(Debug)]
pub struct Throttle {
    limits: Limits,
    clients: HashMap<IpAddr, Meter>,
    total: Meter,
}

impl Throttle {
    pub fn new(limits: Limits) -> Self {
        Throttle {
            limits,
            clients: HashMap::new(),
            total: Meter::default(),
        }
    }

    /// `client` wants to prove the token at `now`: `Ok` means compare it (the attempt is
    /// charged; call [`Throttle::succeeded`] if it was right), `Err(wait)` means answer
    /// without comparing, and that an attempt fits again after `wait`.
    pub fn attempt(&mut self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let l = self.limits;
        let key = client_key(client);
        let mine = self.clients.get(&key).copied().unwrap_or_default();
        let wait = mine
            .wait(now, l.per_client_burst, l.per_client_every)
            .max(self.total.wait(now, l.total_burst, l.total_every));
        if !wait.is_zero() {
            return Err(wait);
        }
        if self.clients.len() >= PRUNE_ABOVE {
            self.clients.retain(|_, m| !m.debt(now).is_zero());
        }
        self.clients
            .entry(key)
            .or_default()
            .charge(now, l.per_client_every);
        self.total.charge(now, l.total_every);
        Ok(())
    }

    /// The attempt `client` was let through for proved the token: its charge is given
    /// back (earlier wrong ones stay charged).
    pub fn succeeded(&mut self, client: IpAddr, now: Instant) {
        let l = self.limits;
        let key = client_key(client);
        if let Some(m) = self.clients.get_mut(&key) {
            m.refund(now, l.per_client_every);
            if m.paid_at.is_none() {
                self.clients.remove(&key);
            }
        }
        self.total.refund(now, l.total_every);
    }

    /// Client addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.clients.len()
    }
}

/// Whom an address stands for: an IPv4 address itself (also when written as an
/// IPv4-mapped IPv6 one), an IPv6 address's /64 (one host usually holds a whole /64).
pub fn client_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits {
        per_client_burst: 5,
        per_client_every: Duration::from_secs(12),
        total_burst: 30,
        total_every: Duration::from_secs(1),
    };

    fn ip(i: u32) -> IpAddr {
        IpAddr::from((0x0a00_0000 + i).to_be_bytes())
    }

    #[test]
    fn a_few_wrong_guesses_then_a_wait_then_the_right_token_works() {
        let t0 = Instant::now();
        let mut th = Throttle::new(L);
        for _ in 0..5 {
            assert_eq!(th.attempt(ip(1), t0), Ok(()));
        }
        // The sixth at once: refused, for one interval.
        assert_eq!(th.attempt(ip(1), t0), Err(Duration::from_secs(12)));
        let later = t0 + Duration::from_secs(7);
        assert_eq!(th.attempt(ip(1), later), Err(Duration::from_secs(5)));
        // Another address is not held up by it.
        assert_eq!(th.attempt(ip(2), t0), Ok(()));
        // After the wait the owner of the token gets in, and keeps getting in.
        let t1 = t0 + Duration::from_secs(12);
        for k in 0..100 {
            let now = t1 + Duration::from_millis(k);
            assert_eq!(th.attempt(ip(1), now), Ok(()));
            th.succeeded(ip(1), now);
        }
    }

    #[test]
    fn many_addresses_together_get_the_total_budget_only() {
        let t0 = Instant::now();
        let mut th = Throttle::new(L);
        let let_through = (0..1000).filter(|i| th.attempt(ip(*i), t0).is_ok()).count();
        assert_eq!(let_through, 30);
        assert_eq!(th.attempt(ip(5000), t0), Err(Duration::from_secs(1)));
        assert_eq!(th.attempt(ip(5000), t0 + Duration::from_secs(1)), Ok(()));
    }

    #[test]
    fn addresses_are_grouped_as_hosts_are() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let mapped: IpAddr = "::ffff:10.0.0.7".parse().unwrap();
        assert_eq!(client_key(mapped), "10.0.0.7".parse::<IpAddr>().unwrap());
    }

    /// A small deterministic generator (no dependency): xorshift64*.
    struct Gen(u64);
    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Attempts let through (and not given back) within any time window of length
    /// `span`: at most `burst` plus one per `every` of it.
    fn check_windows(charged: &[Duration], burst: u32, every: Duration, what: &str) {
        for (i, start) in charged.iter().enumerate() {
            for (j, end) in charged.iter().enumerate().skip(i) {
                let span = *end - *start;
                let allowed = burst as u128 + span.as_nanos() / every.as_nanos();
                assert!(
                    (j - i + 1) as u128 <= allowed,
                    "{what}: {} attempts in {span:?} ({allowed} allowed)",
                    j - i + 1
                );
            }
        }
    }

    #[test]
    fn generated_sequences_keep_every_promise() {
        for seed in 1..=300u64 {
            let mut g = Gen(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let limits = Limits {
                per_client_burst: 1 + g.below(6) as u32,
                per_client_every: Duration::from_millis(100 + g.below(20_000)),
                total_burst: 1 + g.below(40) as u32,
                total_every: Duration::from_millis(10 + g.below(3000)),
            };
            let mut th = Throttle::new(limits);
            let t0 = Instant::now();
            let mut now = Duration::ZERO;
            let clients = 1 + g.below(60) as u32;
            // What was let through and stayed charged (wrong guesses), per client and
            // in total; the right token's attempts are given back.
            let mut wrong: HashMap<IpAddr, Vec<Duration>> = HashMap::new();
            let mut wrong_total = Vec::new();
            let longest = limits.per_client_every.max(limits.total_every);
            for _ in 0..400 {
                // Bursts, pauses and long silences.
                now += Duration::from_millis(match g.below(10) {
                    0..=5 => g.below(50),
                    6..=8 => g.below(3000),
                    _ => g.below(60_000),
                });
                let who = ip(g.below(clients as u64) as u32);
                let right = g.below(5) == 0;
                match th.attempt(who, t0 + now) {
                    Ok(()) if right => th.succeeded(who, t0 + now),
                    Ok(()) => {
                        wrong.entry(who).or_default().push(now);
                        wrong_total.push(now);
                    }
                    Err(wait) => {
                        // Never told to wait longer than one interval; and after the
                        // wait, with nobody else guessing, it is let in.
                        assert!(!wait.is_zero() && wait <= longest, "{wait:?}");
                        let mut alone = Throttle {
                            limits,
                            clients: th.clients.clone(),
                            total: th.total,
                        };
                        assert_eq!(alone.attempt(who, t0 + now + wait), Ok(()));
                    }
                }
                assert!(th.tracked() <= PRUNE_ABOVE, "{}", th.tracked());
            }
            for times in wrong.values() {
                check_windows(
                    times,
                    limits.per_client_burst,
                    limits.per_client_every,
                    "one client",
                );
            }
            check_windows(
                &wrong_total,
                limits.total_burst,
                limits.total_every,
                "all clients",
            );
        }
    }

    #[test]
    fn the_right_token_is_let_in_soon_however_the_guessing_went() {
        for seed in 1..=100u64 {
            let mut g = Gen(seed | 1);
            let mut th = Throttle::new(L);
            let t0 = Instant::now();
            let mut now = Duration::ZERO;
            for _ in 0..2000 {
                now += Duration::from_millis(g.below(200));
                let _ = th.attempt(ip(g.below(1000) as u32), t0 + now);
                // Guesses from a thousand addresses: the map is pruned as it grows.
                assert!(th.tracked() <= PRUNE_ABOVE, "{}", th.tracked());
            }
            // The guessing stops: the right token from any address gets in within
            // the longer interval.
            let owner = ip(g.below(1000) as u32);
            let at = t0 + now + L.per_client_every;
            assert_eq!(th.attempt(owner, at), Ok(()), "seed {seed}");
            th.succeeded(owner, at);
        }
    }
}
