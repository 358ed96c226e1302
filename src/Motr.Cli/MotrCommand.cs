using Motr.Be;

namespace Motr.Cli;

/// <summary>
/// The <c>motr</c> command: tools that work on a domain folder (DESIGN §5, src/Motr.Cli). Each sub-command opens the
/// domain (recovery replays the log, as any open does), works, and closes it: load as the engine does, dump read-only
/// (<see cref="DomainOptions.ReadOnly"/>), and fsck read-only unless given <c>--recover</c>.
/// </summary>
internal static class MotrCommand
{
    /// <summary>Exit code: the command did what it was asked and found nothing wrong.</summary>
    public const int Ok = 0;

    /// <summary>Exit code of <c>fsck</c>: damage found.</summary>
    public const int Damage = 1;

    /// <summary>Exit code: the command could not do its work (bad arguments, a domain that does not open, a missing tree).</summary>
    public const int Failed = 2;

    /// <summary>Exit code: interrupted (SIGINT or SIGTERM) and stopped cleanly, as shells report a SIGINT (128 + 2).</summary>
    public const int Interrupted = 130;

    public const string Usage = """
        motr: tools for a Motr.Actors domain folder

        usage:
          motr fsck <domain-folder> [--recover] [--truncate-at-corruption]
              Checks every segment of the domain: the allocator, every b+tree named in the segment's roots, and
              that each allocated block belongs to exactly one tree. Read-only: writes nothing to the folder (a
              read-only file system or snapshot can be checked); the log is replayed in memory, and the image
              checked is the one an open recovers. Exit code 0: healthy; 1: damage found, each problem with its
              offset (damage that keeps the domain from opening too); 2: could not check (also: an engine has
              the folder open). --recover opens the domain as an engine does, writing recovery's work (replayed
              records placed, a checkpoint). --truncate-at-corruption checks a domain whose log has a damaged
              record without it and everything after it (the report says how many records; it counts as damage
              found); with --recover they are discarded from the log, and those transactions are lost.
          motr dump <domain-folder> <root-name> <file> [--segment N] [--force]
              Saves the b+tree named <root-name> in segment N (default 1) to a portable, versioned,
              checksummed file, written beside <file> and renamed to it when complete. An existing <file> is
              replaced only with --force; a file in a domain folder, or a symbolic link
              (such as /dev/stdout), never. Read-only, as fsck: writes nothing to the domain's folder (the
              log is replayed in memory), so it works on a read-only copy and beside a read-only fsck.
          motr load <domain-folder> <file> <root-name> [--segment N]
              Loads a saved tree into a new tree of segment N (default 1), named <root-name>, which must be free.
              The tree gets its name only when complete; an interrupted load's partial tree is removed, at once
              or by the next load.
          Ctrl-C (SIGINT) or SIGTERM stops dump and load cleanly, and fsck within the segment being checked: exit code 130.
          A second one stops the process at once (as a crash would: the next open recovers the domain).
          motr help
        """;

    /// <summary>Runs the command given by <paramref name="args"/>; returns the process exit code.</summary>
    public static async Task<int> RunAsync(string[] args, TextWriter stdout, TextWriter stderr, CancellationToken cancel = default)
    {
        if (args.Length == 0 || args[0] is "help" or "--help" or "-h")
        {
            (args.Length == 0 ? stderr : stdout).WriteLine(Usage);
            return args.Length == 0 ? Failed : Ok;
        }
        try
        {
            return args[0] switch
            {
                "fsck" => await FsckCommand.RunAsync(Parse(args, 1, 1, allowSegment: false, "--truncate-at-corruption", FsckCommand.RecoverFlag), stdout, stderr, cancel),
                "dump" => await TreeFileCommands.DumpAsync(Parse(args, 3, 3, allowSegment: true, "--force"), stdout, stderr, cancel),
                "load" => await TreeFileCommands.LoadAsync(Parse(args, 3, 3, allowSegment: true), stdout, stderr, cancel),
                _ => throw new UsageException($"unknown command '{args[0]}'"),
            };
        }
        catch (UsageException e)
        {
            stderr.WriteLine($"motr: {e.Message}");
            stderr.WriteLine();
            stderr.WriteLine(Usage);
            return Failed;
        }
        catch (CommandInterruptedException e)
        {
            stderr.WriteLine($"motr {args[0]}: {e.Message}");
            return Interrupted;
        }
        catch (OperationCanceledException) when (cancel.IsCancellationRequested)
        {
            stderr.WriteLine(args[0] switch
            {
                "load" => "motr load: interrupted; no partial tree is left",
                "dump" => "motr dump: interrupted; nothing was written under the name asked for",
                _ => $"motr {args[0]}: interrupted; the check is incomplete (no verdict)",
            });
            return Interrupted;
        }
        catch (Exception e) when (e is CommandException or BeException or IOException or UnauthorizedAccessException)
        {
            // What could not be done, named by the engine's own message (file, offset, segment); no stack trace.
            stderr.WriteLine($"motr {args[0]}: {e.Message}");
            return Failed;
        }
    }

    /// <summary>The arguments of a sub-command: its positional ones, the segment (1-based) and the flags given.</summary>
    internal sealed record Arguments(string Command, string[] Positional, int Segment, HashSet<string> Flags);

    private static Arguments Parse(string[] args, int minPositional, int maxPositional, bool allowSegment, params string[] flags)
    {
        var positional = new List<string>();
        var given = new HashSet<string>(StringComparer.Ordinal);
        int segment = 1;
        for (int i = 1; i < args.Length; i++)
        {
            string a = args[i];
            if (a == "--segment" && allowSegment)
            {
                if (i + 1 >= args.Length || !int.TryParse(args[++i], out segment) || segment < 1)
                    throw new UsageException($"{args[0]}: --segment needs a segment number (1 or more)");
            }
            else if (Array.IndexOf(flags, a) >= 0) given.Add(a);
            else if (a.StartsWith("--", StringComparison.Ordinal)) throw new UsageException($"{args[0]}: unknown option '{a}'");
            else positional.Add(a);
        }
        if (positional.Count < minPositional || positional.Count > maxPositional)
            throw new UsageException($"{args[0]}: expected {minPositional} argument{(minPositional == 1 ? "" : "s")}, got {positional.Count}");
        return new Arguments(args[0], positional.ToArray(), segment, given);
    }

    /// <summary>
    /// Options that open an existing domain in <paramref name="folder"/> and change nothing about it: no new domain,
    /// no added segments (the segment count given is the least, and every existing one is kept).
    /// </summary>
    internal static DomainOptions OpenExisting(string folder, TextWriter stderr, bool truncateAtCorruption = false)
    {
        if (!Directory.Exists(folder)) throw new CommandException($"no folder {folder}");
        return new DomainOptions
        {
            Path = folder,
            CreateIfMissing = false,
            Segments = 1,
            RecoveryMode = truncateAtCorruption ? RecoveryMode.TruncateAtCorruption : RecoveryMode.Strict,
            OnWarning = m => stderr.WriteLine($"warning: {m}"),
            // A long log replay shows how far it has got.
            RecoveryProgress = new Throttled<RecoveryProgress>(p =>
                stderr.WriteLine($"recovery: {p.RecordsReplayed} records replayed ({p.BytesReplayed >> 20} of at most {p.BytesToScan >> 20} MiB of log)")),
        };
    }
}

/// <summary>
/// Passes a report on at most every two seconds, the first two seconds after it is made: progress of long work on
/// stderr without flooding it, and nothing from short work.
/// </summary>
internal sealed class Throttled<T>(Action<T> report) : IProgress<T>
{
    /// <summary>A test's own period instead of two seconds (async-local: tests running beside it keep theirs).</summary>
    internal static readonly AsyncLocal<TimeSpan?> Period = new(); // one per T

    private readonly TimeSpan _period = Period.Value ?? TimeSpan.FromSeconds(2);
    private readonly System.Diagnostics.Stopwatch _since = System.Diagnostics.Stopwatch.StartNew();

    public void Report(T value)
    {
        if (_since.Elapsed < _period) return;
        report(value);
        _since.Restart();
    }
}

/// <summary>Bad arguments: the usage is printed after the message.</summary>
internal sealed class UsageException(string message) : Exception(message);

/// <summary>
/// A sub-command was interrupted where the usual report of an interruption would be untrue; the message says what is
/// left. Not an <see cref="OperationCanceledException"/>: an async method that throws one ends canceled, and the type
/// and message would be lost on the way out of a locality's turn.
/// </summary>
internal sealed class CommandInterruptedException(string message, Exception inner) : Exception(message, inner);

/// <summary>A sub-command could not do its work; the message says what and where.</summary>
internal sealed class CommandException(string message) : Exception(message);
