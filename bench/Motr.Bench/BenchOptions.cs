using System.Globalization;

namespace Motr.Bench;

/// <summary>A bad command line; the message says what is wrong.</summary>
internal sealed class UsageException(string message) : Exception(message);

/// <summary>The command line of the harness: a command followed by options shared by every bench.</summary>
internal sealed class BenchOptions
{
    public const string Usage = """
        usage: Motr.Bench <command> [options]
        commands:
          tx        durable small transactions through group commit (motr vs SQLite WAL synchronous=FULL)
          btree     b+tree of 16-byte random keys and 100-byte values: insert, lookup, ordered scan, delete
                    (motr-1loc, motr-2loc vs LMDB and SQLite)
        options:
          --quick            tx: short warm-up and window (whole run under 30 s); btree: 200k keys, 2 s warm-up (under 60 s)
          --seconds S        tx: measured window per row (default 20, --quick 2)
          --warmup S         warm-up per row (tx: default 2, --quick 0.5) or per system (btree: default 5, --quick 2;
                             longer while the JIT is still busy)
          --writers N[,N..]  concurrent writers per locality. tx: a list runs one motr row per count (default 512);
                             btree: motr inserts and deletes (default 1024, one count only)
          --keys N           btree: number of keys (default 1000000, --quick 200000)
          --rounds N         btree: run every system N times, taking turns (round 1 runs each system, then round 2 ...);
                             each row is the round with the median rate, its notes list every round's rate (default 1)
          --workloads A,B    only these workloads (default all of the command)
          --systems A,B      only these systems (tx: motr, sqlite-full; btree: motr-1loc, motr-2loc, lmdb, sqlite)
          --json FILE        also write the results as a JSON array
          --log-mib N        size of motr's log file in MiB (default 256, the engine's default; the default 20 s window spans
                             many checkpoints, so the rate is the sustained one — a row without one is flagged as a burst)
          --checkpoint-fraction F   motr checkpoints once this fraction of the log is placed (default: the engine's)
          --alloc-sample     also sample what is allocated in each window (tx: motr's; btree: every system's), by type (a diagnostic; it allocates itself)
          --dir DIR          make the bench folder inside DIR (default: the system temp folder); it is deleted at the end
          --self-check       btree: a check of the bench's own checks, not a measurement: every system on 3,000 keys (--keys),
                             no warm-up, a 16 MiB motr log, short scans; then stores damaged on purpose (a key dropped, a
                             value changed, a key added) must each fail the checks (lmdb is left out if liblmdb is missing)
        """;

    public required string Command { get; init; }
    public bool Quick { get; private set; }
    public string? JsonPath { get; private set; }
    /// <summary>--writers as given; null when absent (each bench has its own default).</summary>
    public int[]? Writers { get; private set; }

    /// <summary>--keys as given; null when absent.</summary>
    public int? Keys { get; private set; }

    /// <summary>--rounds: how many times btree runs every system (default 1).</summary>
    public int Rounds { get; private set; } = 1;
    public string? Dir { get; private set; }
    public string[]? Workloads { get; private set; }
    public string[]? Systems { get; private set; }
    public bool AllocSample { get; private set; }

    /// <summary>The settings in effect, defaults filled in by the command that ran (for the JSON).</summary>
    public Dictionary<string, object> Settings { get; } = new();

    /// <summary>--self-check (btree): run the bench's checks against damaged stores instead of measuring.</summary>
    public bool SelfCheck { get; private set; }
    public int LogMiB { get; private set; } = 256;

    /// <summary>Overrides DomainOptions.CheckpointFraction when set.</summary>
    public double? CheckpointFraction { get; private set; }
    private double? _seconds, _warmup;

    public TimeSpan Duration => TimeSpan.FromSeconds(_seconds ?? (Quick ? 2 : 20));
    public TimeSpan Warmup => TimeSpan.FromSeconds(_warmup ?? (Quick ? 0.5 : 2));

    /// <summary>--warmup as given; null when absent.</summary>
    public TimeSpan? WarmupGiven => _warmup is double w ? TimeSpan.FromSeconds(w) : null;

    public bool Runs(string system) => Systems is null || Systems.Contains(system, StringComparer.OrdinalIgnoreCase);
    public bool RunsWorkload(string workload) => Workloads is null || Workloads.Contains(workload, StringComparer.OrdinalIgnoreCase);

    public static BenchOptions Parse(string[] args)
    {
        if (args.Length == 0 || args[0].StartsWith('-')) throw new UsageException("no command given");
        var o = new BenchOptions { Command = args[0] };
        bool logGiven = false;
        for (int i = 1; i < args.Length; i++)
        {
            string a = args[i];
            string Value() => i + 1 < args.Length ? args[++i] : throw new UsageException($"{a} needs a value");
            switch (a)
            {
                case "--quick": o.Quick = true; break;
                case "--alloc-sample": o.AllocSample = true; break;
                case "--self-check": o.SelfCheck = true; break;
                case "--json": o.JsonPath = Value(); break;
                case "--dir": o.Dir = Value(); break;
                case "--seconds": o._seconds = Positive(a, Value()); break;
                case "--warmup": o._warmup = Positive(a, Value(), allowZero: true); break;
                case "--writers": o.Writers = List(Value()).Select(v => (int)Positive(a, v)).ToArray(); break;
                case "--keys": o.Keys = (int)Math.Min(Positive(a, Value()), Array.MaxLength / 16); break;
                case "--log-mib": o.LogMiB = (int)Positive(a, Value()); logGiven = true; break;
                case "--rounds": o.Rounds = (int)Math.Min(Positive(a, Value()), 100); break;
                case "--checkpoint-fraction": o.CheckpointFraction = Positive(a, Value()); break;
                case "--workloads": o.Workloads = List(Value()); break;
                case "--systems": o.Systems = List(Value()); break;
                case "-h" or "--help": throw new UsageException("");
                default: throw new UsageException($"unknown option {a}");
            }
        }
        if (o.SelfCheck && !logGiven) o.LogMiB = 16;
        return o;
    }

    private static string[] List(string v) => v.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

    private static double Positive(string option, string v, bool allowZero = false)
    {
        if (!double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out double d) || d < 0 || (d == 0 && !allowZero) || !double.IsFinite(d))
            throw new UsageException($"{option} {v}: expected a {(allowZero ? "non-negative" : "positive")} number");
        return d;
    }
}
