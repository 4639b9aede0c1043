//! Reading a process's (or thread's) CPU time from Linux's `/proc`, for benchmarks that
//! measure a server's CPU beside its throughput.

/// CPU time (user + system) in a `/proc/PID/stat` or `/proc/PID/task/TID/stat` line, in clock
/// ticks (`USER_HZ`, 100 per second on Linux); `None` if the line is not one.
pub fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name may hold spaces and parentheses: the fields after it start past the
    // last ')'. There the state (field 3 of the line) comes first, utime and stime are
    // fields 14 and 15.
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let user: u64 = fields.nth(11)?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

#[cfg(test)]
mod tests {
    use super::stat_cpu_ticks;

    #[test]
    fn reads_user_and_system_ticks_past_a_name_with_spaces_and_parentheses() {
        let line = "4242 (tokio (rt) worker) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    150 27 0 0 20 0 9 0 100 1000000 500 18446744073709551615";
        assert_eq!(stat_cpu_ticks(line), Some(177));
    }

    #[test]
    fn a_line_that_is_not_a_stat_line_has_no_ticks() {
        assert_eq!(stat_cpu_ticks(""), None);
        assert_eq!(stat_cpu_ticks("4242 (short) S 1 2"), None);
        assert_eq!(
            stat_cpu_ticks("4242 (x) S 1 2 3 4 5 6 7 8 9 10 ten 27"),
            None
        );
    }
}
