using System.Diagnostics;
using System.Runtime.InteropServices;
using Motr.Be;
using Motr.Be.BTree;
using Motr.Runtime;

namespace Motr.Cli.Tests;

/// <summary>
/// The command on domain folders an engine has open, or that a crash, another tool or the file system left in an odd
/// state: a clear refusal that names what and where, the documented exit code, and the folder left as it was.
/// </summary>
public sealed class CliInUseTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), $"motr-cli-inuse-{Environment.ProcessId}-{Guid.NewGuid():N}");
    public CliInUseTests() => Directory.CreateDirectory(_root);
    public void Dispose() { try { Directory.Delete(_root, true); } catch (IOException) { } }

    private static Task<(int Code, string Out, string Err)> Motr(params string[] args) => CliHarness.Motr(args);

    /// <summary>A domain of two segments in <c>_root/name</c>, with tree 't' of 100 records in segment 1.</summary>
    private async Task<string> CreateDomain(string name = "d")
    {
        string dir = Path.Combine(_root, name);
        await using var engine = await Engine.OpenAsync(CliHarness.Options(dir));
        var loc = engine.Localities[0];
        await loc.RunAsync(async () =>
        {
            var seg = loc.Segment!;
            var t = await CliHarness.CreateTree(seg, "t");
            for (int i = 0; i < 100; i++)
            {
                using var tx = await seg.BeginAsync(t.InsertCredit(8, 40));
                Assert.Equal(BTreeStatus.Ok, t.Insert(tx, CliHarness.Key(i), new byte[40]));
                _ = tx.Close();
            }
            await seg.FlushAsync();
        });
        return dir;
    }

    /// <summary>Every file of the folder but the lock file, by name, with its bytes.</summary>
    private static Dictionary<string, byte[]> Files(string dir) =>
        Directory.GetFiles(dir).Where(f => Path.GetFileName(f) != BeConstants.LockFileName)
            .ToDictionary(f => Path.GetFileName(f), File.ReadAllBytes);

    private static void AssertSameFiles(Dictionary<string, byte[]> before, Dictionary<string, byte[]> after)
    {
        Assert.Equal(before.Keys.Order(), after.Keys.Order());
        foreach (var (name, bytes) in before) Assert.True(bytes.AsSpan().SequenceEqual(after[name]), $"{name} changed");
    }

    // The check compared the target's folder with the domain folder's path as spelled: the same folder by a symlink, or
    // another domain's folder, passed, and `dump --force` renamed the dump over a segment file (the domain then no
    // longer opened: "not a Motr segment").
    [Fact]
    public async Task Dump_never_writes_into_a_domain_folder_named_by_another_path_or_into_another_domain()
    {
        string dir = await CreateDomain();
        string other = await CreateDomain("other");
        string alias = Path.Combine(_root, "alias");
        Directory.CreateSymbolicLink(alias, dir);
        var before = Files(dir);
        var otherBefore = Files(other);
        foreach (string target in new[] { Path.Combine(alias, BeConstants.SegmentFileName(2)), Path.Combine(other, BeConstants.SegmentFileName(1)) })
        {
            var (code, output, err) = await Motr("dump", dir, "t", target, "--force");
            Assert.True(code == MotrCommand.Failed, $"{target}: exit {code}\n{output}{err}");
            Assert.Contains("is in a domain folder", err);
            Assert.Contains(BeConstants.LogFileName, err);
            Assert.False(File.Exists(target + ".partial"));
        }
        AssertSameFiles(before, Files(dir));
        AssertSameFiles(otherBefore, Files(other));
        Assert.Equal(MotrCommand.Ok, (await Motr("fsck", dir)).Code);
        Assert.Equal(MotrCommand.Ok, (await Motr("fsck", other)).Code);
    }

    // Pins: a folder an engine has open (here in this process; flock is per open file, so another process is refused
    // the same way) is refused by every command before it reads or writes anything, with the lock named; the lock is an
    // OS lock, so the file an engine leaves behind blocks nobody once it is closed.
    [Fact]
    public async Task Every_command_refuses_a_folder_an_engine_has_open_names_the_lock_and_changes_nothing()
    {
        string dir = await CreateDomain();
        string dump = Path.Combine(_root, "t.motrdump");
        Assert.Equal(MotrCommand.Ok, (await Motr("dump", dir, "t", dump)).Code);
        await using (var engine = await Engine.OpenAsync(new DomainOptions { Path = dir, CreateIfMissing = false }))
        {
            var before = Files(dir);
            string target = Path.Combine(_root, "again.motrdump");
            foreach (var args in new[] { new[] { "fsck", dir }, ["dump", dir, "t", target], ["load", dir, dump, "t2"] })
            {
                var (code, output, err) = await Motr(args);
                Assert.True(code == MotrCommand.Failed, $"{args[0]}: exit {code}\n{output}{err}");
                Assert.Contains($"{Path.GetFullPath(dir)}: the folder is in use by another engine", err);
                Assert.Contains(BeConstants.LockFileName, err);
            }
            Assert.False(File.Exists(target) || File.Exists(target + ".partial"));
            AssertSameFiles(before, Files(dir));
        }
        Assert.True(File.Exists(Path.Combine(dir, BeConstants.LockFileName)));
        Assert.Equal(MotrCommand.Ok, (await Motr("load", dir, dump, "t2")).Code);
        Assert.Equal(MotrCommand.Ok, (await Motr("fsck", dir)).Code);
    }

    // Every IOException opening the lock file was reported as "the folder is in use by another engine": a read-only
    // file system (EROFS), a lock file that is a dangling symlink (ENOENT) or a symlink loop (ELOOP) sent the user
    // looking for an engine that does not exist. Only flock's EWOULDBLOCK is a holder; the rest say what failed.
    [Fact]
    public async Task A_lock_file_that_cannot_be_opened_is_reported_as_that_not_as_a_folder_in_use()
    {
        string dir = await CreateDomain();
        string lockFile = Path.Combine(dir, BeConstants.LockFileName);
        foreach (string target in new[] { BeConstants.LockFileName, Path.Combine(_root, "no", "such", "folder") })
        {
            File.Delete(lockFile);
            File.CreateSymbolicLink(lockFile, target);   // a symlink loop, then a dangling symlink
            var before = Files(dir);
            var (code, output, err) = await Motr("fsck", dir);
            Assert.True(code == MotrCommand.Failed, $"exit {code}\n{output}{err}");
            Assert.DoesNotContain("in use", err);
            Assert.Contains($"cannot open the lock file {Path.GetFullPath(lockFile)}", err);   // fsck only reads it
            Assert.Contains($"cannot open or create the lock file {Path.GetFullPath(lockFile)}", (await Motr("fsck", dir, "--recover")).Err);
            AssertSameFiles(before, Files(dir));
        }
        File.Delete(lockFile);
        Assert.Equal(MotrCommand.Ok, (await Motr("fsck", dir)).Code);
    }

    /// <summary>A stdout that cancels <paramref name="cancel"/> once a line starting with <paramref name="prefix"/> is written.</summary>
    private sealed class CancelOnLine(string prefix, CancellationTokenSource cancel) : StringWriter
    {
        public override void WriteLine(string? value)
        {
            base.WriteLine(value);
            if (value?.StartsWith(prefix, StringComparison.Ordinal) == true) cancel.Cancel();
        }
    }

    // fsck was not given the command's cancellation: as Program.cs cancels SIGINT and SIGTERM's default (to let dump and
    // load stop cleanly), Ctrl-C on a long fsck did nothing at all, and it ran to its verdict (exit 0 or 1).
    [Fact]
    public async Task Fsck_stops_on_ctrl_c_before_the_next_segment_exits_130_and_releases_the_folder()
    {
        string dir = await CreateDomain();
        using var cancel = new CancellationTokenSource();
        var stdout = new CancelOnLine("segment 1 ", cancel);
        var stderr = new StringWriter();
        int code = await MotrCommand.RunAsync(["fsck", dir], stdout, stderr, cancel.Token);
        Assert.True(code == MotrCommand.Interrupted, $"exit {code}\n{stdout}{stderr}");
        Assert.Contains("motr fsck: interrupted; the check is incomplete", stderr.ToString());
        Assert.DoesNotContain("segment 2 ", stdout.ToString());
        Assert.DoesNotContain("fsck: healthy", stdout.ToString());

        // Interrupted before it starts: no domain opened.
        code = await MotrCommand.RunAsync(["fsck", dir], new StringWriter(), new StringWriter(), cancel.Token);
        Assert.Equal(MotrCommand.Interrupted, code);
        Assert.Equal(MotrCommand.Ok, (await Motr("fsck", dir)).Code);   // the folder's lock was released
    }

    // A segment's check could not be stopped or followed: the token was looked at only between segments, and nothing was
    // said until a segment's verdict, however large the segment.
    [Fact]
    public async Task Fsck_reports_a_long_segment_checks_progress_on_stderr_and_ctrl_c_stops_it_within_the_segment()
    {
        string dir = await CreateDomain();
        Throttled<CheckProgress>.Period.Value = TimeSpan.Zero; // every report a line (by default: silent for 2 s, then every 2 s)
        var (code, output, err) = await Motr("fsck", dir);
        Assert.True(code == MotrCommand.Ok, $"exit {code}\n{output}{err}");
        Assert.Matches(@"fsck: segment 1: allocator chunk chain: [\d,.\s]+ of [\d,.\s]+ bytes \(100%\)", err);
        Assert.Matches(@"fsck: segment 1: allocated blocks: [\d,.\s]+ of [\d,.\s]+ blocks \(100%\)", err);
        Assert.Matches(@"fsck: segment 1: b\+tree 0x[0-9A-F]+: [\d,.\s]+ of [\d,.\s]+ nodes \(100%\)", err);
        Assert.DoesNotContain("fsck:", output.Replace("fsck: healthy", ""));

        using var cancel = new CancellationTokenSource();
        var stderr = new CancelOnLine("fsck: segment 1: allocator chunk chain", cancel);
        var stdout = new StringWriter();
        code = await MotrCommand.RunAsync(["fsck", dir], stdout, stderr, cancel.Token);
        Assert.True(code == MotrCommand.Interrupted, $"exit {code}\n{stdout}{stderr}");
        Assert.Contains("motr fsck: interrupted; the check is incomplete", stderr.ToString());
        Assert.DoesNotContain("fsck: segment 1: allocated blocks", stderr.ToString()); // stopped inside segment 1
        Assert.DoesNotContain("segment 1 (", stdout.ToString());
        Assert.Equal(MotrCommand.Ok, (await Motr("fsck", dir)).Code);   // closed, the folder's lock released
    }

    // fsck suggested --truncate-at-corruption for any damage in motr.log: for an empty, truncated or shortened log (a
    // header problem, which no recovery mode opens) the advice was wrong, and following it changed nothing. The hint is
    // for a damaged record followed by intact ones only (CliTests' crash image pins that it is still given there).
    [Fact]
    public async Task Fsck_suggests_truncate_at_corruption_only_where_it_opens_the_domain()
    {
        string dir = await CreateDomain();
        string log = Path.Combine(dir, BeConstants.LogFileName);
        long length = new FileInfo(log).Length;
        foreach (long cut in new[] { 0L, 700, length / 2 })
        {
            using (var f = new FileStream(log, FileMode.Open)) f.SetLength(cut);
            var before = Files(dir);
            var (code, output, err) = await Motr("fsck", dir);
            Assert.True(code == MotrCommand.Damage, $"{cut}: exit {code}\n{output}{err}");
            Assert.Contains($"does not open: {Path.GetFullPath(log)} @ 0x", output);
            Assert.DoesNotContain("--truncate-at-corruption", output + err);
            AssertSameFiles(before, Files(dir));
        }
    }

    // A domain whose log was deleted or lost was reported as "no domain here (no motr.log) and CreateIfMissing is off",
    // exit 2: fsck called a folder of segments holding data empty (and "could not check") instead of finding damage.
    [Fact]
    public async Task Fsck_of_segments_whose_log_is_lost_reports_damage_naming_the_log_and_changes_nothing()
    {
        string dir = await CreateDomain();
        File.Delete(Path.Combine(dir, BeConstants.LogFileName));
        var before = Files(dir);
        var (code, output, err) = await Motr("fsck", dir);
        Assert.True(code == MotrCommand.Damage, $"exit {code}\n{output}{err}");
        Assert.Contains($"does not open: {Path.Combine(Path.GetFullPath(dir), BeConstants.LogFileName)} @ 0x0 (0): the log is missing, " +
            $"but segment file {BeConstants.SegmentFileName(1)} holds transactions", output);
        (code, output, err) = await Motr("load", dir, Path.Combine(dir, BeConstants.SegmentFileName(1)), "x");
        Assert.True(code == MotrCommand.Failed, $"exit {code}\n{output}{err}");
        Assert.Contains("the log is missing", err);
        AssertSameFiles(before, Files(dir));

        // Segment files that never held a transaction (an interrupted creation) are still no domain.
        string empty = Path.Combine(_root, "empty");
        await using (await Engine.OpenAsync(CliHarness.Options(empty))) { }
        File.Delete(Path.Combine(empty, BeConstants.LogFileName));
        (code, output, err) = await Motr("fsck", empty);
        Assert.True(code == MotrCommand.Failed, $"exit {code}\n{output}{err}");
        Assert.Contains("no domain here", err);
    }

    // The dump is renamed over its target, so `motr dump d t /dev/stdout --force` replaced the symlink /dev/stdout with a
    // regular file holding the dump (for the whole system, as root), and a shell's >(...) failed with "Could not find
    // file '/dev/fd/63.partial'". A symbolic link is refused, with --force too, and left as it was.
    [Fact]
    public async Task Dump_refuses_a_symbolic_link_as_its_target_even_with_force()
    {
        string dir = await CreateDomain();
        string real = Path.Combine(_root, "real.motrdump");
        File.WriteAllText(real, "precious");
        string link = Path.Combine(_root, "link.motrdump");
        string dangling = Path.Combine(_root, "dangling.motrdump");
        File.CreateSymbolicLink(link, real);
        File.CreateSymbolicLink(dangling, Path.Combine(_root, "nowhere"));
        foreach (string target in new[] { link, dangling })
        {
            var (code, output, err) = await Motr("dump", dir, "t", target, "--force");
            Assert.True(code == MotrCommand.Failed, $"{target}: exit {code}\n{output}{err}");
            Assert.Contains($"{target} is a symbolic link", err);
            Assert.NotNull(new FileInfo(target).LinkTarget);
            Assert.False(File.Exists(target + ".partial"));
        }
        Assert.Equal("precious", File.ReadAllText(real));
        Assert.False(File.Exists(Path.Combine(_root, "nowhere")));
    }

    [DllImport("libc", SetLastError = true)]
    private static extern int mknod([MarshalAs(UnmanagedType.LPUTF8Str)] string path, uint mode, ulong dev);

    // .NET tells a device node or a FIFO from a file by nothing, so `dump --force` renamed the dump over whatever the name
    // held: as root, `motr dump d t /dev/null --force` replaced /dev/null for the whole system. Made here in the test's
    // own folder (a FIFO, and as root a node of /dev/null's numbers), never in /dev.
    [Fact]
    public async Task Dump_refuses_a_device_node_or_a_fifo_as_its_target_even_with_force()
    {
        string dir = await CreateDomain();
        var targets = new List<(string Path, string Kind)>();
        string fifo = Path.Combine(_root, "fifo.motrdump");
        Assert.Equal(0, mknod(fifo, 0x1000 | 0x1A4, 0)); // S_IFIFO | 0644
        targets.Add((fifo, "a FIFO"));
        string node = Path.Combine(_root, "null.motrdump");
        if (mknod(node, 0x2000 | 0x1B6, (1UL << 8) | 3) == 0) targets.Add((node, "a character device")); // S_IFCHR, 1:3 (needs root)
        foreach (var (target, kind) in targets)
        {
            var (code, output, err) = await Motr("dump", dir, "t", target, "--force");
            Assert.True(code == MotrCommand.Failed, $"{target}: exit {code}\n{output}{err}");
            Assert.Contains($"{target} is {kind}, not a file", err);
            Assert.Equal(kind, FileKind.NotRegular(target));
            Assert.False(File.Exists(target + ".partial"));
        }
        // A regular file is still replaced with --force.
        string plain = Path.Combine(_root, "plain.motrdump");
        File.WriteAllText(plain, "old");
        Assert.Equal(MotrCommand.Ok, (await Motr("dump", dir, "t", plain, "--force")).Code);
        Assert.Null(FileKind.NotRegular(plain));
        Assert.NotEqual("old", File.ReadAllText(plain));
    }

    [DllImport("libc", SetLastError = true)]
    private static extern int kill(int pid, int signal);

    private const int SigTerm = 15;

    // Program.cs cancels the default action of SIGINT and SIGTERM so that the command stops cleanly, but a command
    // blocked where no cancellation reaches (here a load reading a pipe that never delivers; as well a long recovery or
    // a hung file system) then ignored every signal: Ctrl-C, twice or ten times, and SIGTERM did nothing, and only
    // SIGKILL stopped it. A second signal now ends the process at once.
    [Fact]
    public async Task A_second_signal_ends_a_command_that_the_first_could_not_stop()
    {
        if (!OperatingSystem.IsLinux()) return;   // signals, /proc and /dev/stdin as a pipe
        string dir = await CreateDomain();
        // A first signal that lands before the read blocks is seen by the load, which stops cleanly (exit 130, or 143 when
        // the next signal, sent while it was closing the engine, ended it first): that run shows nothing here, and the
        // next one tries again.
        for (int attempt = 0; ; attempt++)
        {
            using var child = StartMotr(null, "load", dir, "/dev/stdin", "x");
            var stdout = child.StandardOutput.ReadToEndAsync();
            var stderr = child.StandardError.ReadToEndAsync();
            try
            {
                // Ready once it holds the domain's lock (the engine opens after the signal handlers are registered) and has
                // opened the dump, /dev/stdin, a second descriptor on its stdin pipe: it then blocks reading it, and nothing
                // is ever written. The pipe alone is not enough: between fork and exec the child holds the parent's copy of
                // the pipe as well, and a signal then meets the runtime's default action (exit 143, nothing said).
                string lockFile = Path.Combine(dir, "motr.lock");
                for (int i = 0; i < 600 && !child.HasExited && (Opened(child.Id, "/proc/self/fd/0") < 2 || !Holds(child.Id, lockFile)); i++)
                    await Task.Delay(50);
                if (child.HasExited) Assert.Fail($"exit {child.ExitCode}\n{await stdout}{await stderr}");
                await Task.Delay(100);
                for (int i = 0; i < 300 && !child.HasExited; i++)
                {
                    kill(child.Id, SigTerm);
                    await Task.Delay(100);
                }
                Assert.True(child.HasExited, "the child ignored 300 SIGTERMs");
                await child.WaitForExitAsync();
                string err = await stderr;
                if (err.Contains("motr load: interrupted") && attempt < 5) continue;
                Assert.True(err.Contains("SIGTERM again: stopping at once"), $"exit {child.ExitCode}\n{err}");
                break;
            }
            finally
            {
                if (!child.HasExited) child.Kill();
            }
        }
        // The folder is free again and as healthy as before; nothing was named.
        var (code, output, errors) = await Motr("fsck", dir);
        Assert.True(code == MotrCommand.Ok, output + errors);
        Assert.DoesNotContain("'x'", output);
    }

    /// <summary>How many of process <paramref name="pid"/>'s descriptors name what its own <paramref name="fdLink"/> names (Linux: /proc fd links).</summary>
    private static int Opened(int pid, string fdLink)
    {
        try
        {
            string? target = new FileInfo(fdLink.Replace("self", pid.ToString())).LinkTarget;
            return target is null ? 0 : Directory.EnumerateFileSystemEntries($"/proc/{pid}/fd").Count(fd => new FileInfo(fd).LinkTarget == target);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return 0; }
    }

    /// <summary>Whether process <paramref name="pid"/> has a descriptor on <paramref name="path"/> (Linux: /proc fd links).</summary>
    private static bool Holds(int pid, string path)
    {
        try
        {
            string full = Path.GetFullPath(path);
            return Directory.EnumerateFileSystemEntries($"/proc/{pid}/fd").Any(fd => new FileInfo(fd).LinkTarget == full);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return false; }
    }

    /// <summary>A writer that cancels <paramref name="cancel"/> once a line starting with <paramref name="prefix"/> is written.</summary>
    private static StringWriter CancelOn(string prefix, CancellationTokenSource cancel) => new CancelOnLine(prefix, cancel);

    // Ctrl-C while a load removed the partial tree an earlier interrupted load had left stopped the removal with that
    // tree still named 'motr-load-in-progress', and reported "interrupted; no partial tree is left".
    [Fact]
    public async Task A_load_interrupted_while_removing_an_earlier_loads_tree_says_that_tree_stays()
    {
        string dir = await CreateDomain();
        string dump = Path.Combine(_root, "t.motrdump");
        Assert.Equal(MotrCommand.Ok, (await Motr("dump", dir, "t", dump)).Code);
        await using (var engine = await Engine.OpenAsync(new DomainOptions { Path = dir, CreateIfMissing = false }))
        {
            var loc = engine.Localities[0];
            await loc.RunAsync(async () =>
            {
                var seg = loc.Segment!;
                var partial = await CliHarness.CreateTree(seg, TreeFileCommands.LoadingRoot);
                for (int i = 0; i < 20; i++)
                {
                    using var tx = await seg.BeginAsync(partial.InsertCredit(8, 40));
                    partial.Insert(tx, CliHarness.Key(i), new byte[40]);
                    _ = tx.Close();
                }
                await seg.FlushAsync();
            });
        }
        using var cancel = new CancellationTokenSource();
        var stderr = CancelOn("removing the partial tree an interrupted load left", cancel);
        int code = await MotrCommand.RunAsync(["load", dir, dump, "t2"], new StringWriter(), stderr, cancel.Token);
        Assert.True(code == MotrCommand.Interrupted, $"exit {code}\n{stderr}");
        Assert.DoesNotContain("no partial tree is left", stderr.ToString());
        Assert.Contains($"what remains of it stays under root '{TreeFileCommands.LoadingRoot}', which the next load removes", stderr.ToString());
        var (_, output, _) = await Motr("fsck", dir);
        Assert.Contains($"root '{TreeFileCommands.LoadingRoot}'", output);
        Assert.Equal(MotrCommand.Ok, (await Motr("load", dir, dump, "t2")).Code);
    }

    /// <summary>The real <c>motr</c> command in a child process (stdin, stdout and stderr redirected), with <paramref name="env"/> set.</summary>
    private static Process StartMotr(Dictionary<string, string>? env, params string[] args)
    {
        string? host = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH");
        if (string.IsNullOrEmpty(host) || !File.Exists(host))
            host = Environment.ProcessPath is { } self && Path.GetFileNameWithoutExtension(self) == "dotnet" ? self : "dotnet";
        var psi = new ProcessStartInfo(host) { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "motr.dll"));
        foreach (var a in args) psi.ArgumentList.Add(a);
        foreach (var (k, v) in env ?? []) psi.Environment[k] = v;
        return Process.Start(psi)!;
    }

    // The folder's lock was only .NET's flock for FileShare.None, which .NET skips when System.IO.DisableFileLocking is
    // set (DOTNET_SYSTEM_IO_DISABLEFILELOCKING=1, a setting documented for NFS): a command run with it opened a folder an
    // engine held, replayed its log and checkpointed into it (exit 0), as a second engine would have.
    [Fact]
    public async Task The_folder_lock_holds_when_dotnet_file_locking_is_disabled()
    {
        if (OperatingSystem.IsWindows()) return;   // the switch is Unix's; Windows enforces FileShare.None itself
        string dir = await CreateDomain();
        await using var engine = await Engine.OpenAsync(new DomainOptions { Path = dir, CreateIfMissing = false });
        var before = Files(dir);
        using var child = StartMotr(new() { ["DOTNET_SYSTEM_IO_DISABLEFILELOCKING"] = "1" }, "fsck", dir);
        child.StandardInput.Close();
        var stdout = child.StandardOutput.ReadToEndAsync();
        var stderr = child.StandardError.ReadToEndAsync();
        await child.WaitForExitAsync();
        Assert.True(child.ExitCode == MotrCommand.Failed, $"exit {child.ExitCode}\n{await stdout}{await stderr}");
        Assert.Contains($"{Path.GetFullPath(dir)}: the folder is in use by another engine", await stderr);
        AssertSameFiles(before, Files(dir));
    }
}
