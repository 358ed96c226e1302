using System.Text.RegularExpressions;
using Motr.Be;
using Motr.Be.Alloc;
using Motr.Be.BTree;
using Motr.Runtime;

namespace Motr.Cli.Tests;

/// <summary>
/// <c>motr fsck</c> is read-only unless given <c>--recover</c>: on a domain whose log needs replaying, not a byte of the
/// folder changes (every file's bytes and modification time, the set of files), its descriptors on the domain's files
/// have no write access, a read-only folder is checked, and the report is the one <c>fsck --recover</c> gives.
/// </summary>
public sealed class CliReadOnlyTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), $"motr-cli-ro-{Environment.ProcessId}-{Guid.NewGuid():N}");
    public CliReadOnlyTests() => Directory.CreateDirectory(_root);

    public void Dispose()
    {
        // A test that made the folder read-only leaves it so when it fails: make it writable again to delete it.
        foreach (var d in Directory.GetDirectories(_root)) Writable(d);
        try { Directory.Delete(_root, true); } catch (IOException) { }
    }

    private static Task<(int Code, string Out, string Err)> Motr(params string[] args) => CliHarness.Motr(args);

    /// <summary>
    /// A crash image in <c>_root/name</c>: the files of a live engine after durable transactions none of which is
    /// checkpointed (tree 't' of 30 records in segment 1, and a block no tree owns: a leak at <paramref name="leaked"/>),
    /// with the empty lock file an engine leaves. Opening it replays the log.
    /// </summary>
    private async Task<(string Dir, long Leaked)> CrashImage(string name = "crashed")
    {
        string live = Path.Combine(_root, name + "-live"), dir = Path.Combine(_root, name);
        var options = CliHarness.Options(live);
        options.CheckpointInterval = TimeSpan.FromHours(1);
        options.CheckpointFraction = 0.9;
        long leaked = 0;
        await using (var engine = await Engine.OpenAsync(options))
        {
            var loc = engine.Localities[0];
            await loc.RunAsync(async () =>
            {
                var seg = loc.Segment!;
                var t = await CliHarness.CreateTree(seg, "t");
                for (int i = 0; i < 30; i++)
                {
                    using var tx = await seg.BeginAsync(t.InsertCredit(8, 40));
                    Assert.Equal(BTreeStatus.Ok, t.Insert(tx, CliHarness.Key(i), new byte[40]));
                    await tx.Close();
                }
                using var leak = await seg.BeginAsync(Allocator.AllocCredit);
                leaked = seg.Allocator.Alloc(leak, 256);
                await leak.Close();
            });
            Directory.CreateDirectory(dir);
            foreach (var f in Directory.GetFiles(live))
                if (Path.GetFileName(f) != BeConstants.LockFileName) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
            File.WriteAllBytes(Path.Combine(dir, BeConstants.LockFileName), []);
        }
        return (dir, leaked);
    }

    /// <summary>Every file of the folder: its bytes and its modification time.</summary>
    private static Dictionary<string, (byte[] Bytes, DateTime Mtime)> Stamps(string dir) =>
        Directory.GetFiles(dir).ToDictionary(f => Path.GetFileName(f), f => (File.ReadAllBytes(f), File.GetLastWriteTimeUtc(f)));

    private static void AssertUnchanged(Dictionary<string, (byte[] Bytes, DateTime Mtime)> before, string dir, string context)
    {
        var after = Stamps(dir);
        Assert.True(before.Keys.Order().SequenceEqual(after.Keys.Order()), $"files {string.Join(", ", after.Keys)}\n{context}");
        foreach (var (name, (bytes, mtime)) in before)
        {
            Assert.True(bytes.AsSpan().SequenceEqual(after[name].Bytes), $"{name} changed\n{context}");
            Assert.True(mtime == after[name].Mtime, $"{name} modified at {after[name].Mtime:O} (was {mtime:O})\n{context}");
        }
    }

    /// <summary>The report with recovery's duration taken out (the one thing two runs may differ in).</summary>
    private static string Normalized(string output) => Regex.Replace(output, @" in \d+(\.\d+)? ms", " in _ ms");

    private const string ReadOnlyLine = "  read-only: nothing was written to the folder";

    // Pins the read-only check: fsck replayed the log into the segment files and checkpointed, so checking a domain
    // changed it (and a domain on a read-only file system could not be checked at all).
    [Fact]
    public async Task Fsck_of_a_domain_that_needs_replay_writes_nothing_and_reports_what_fsck_recover_reports()
    {
        var (dir, leaked) = await CrashImage();
        var before = Stamps(dir);
        var (code, output, err) = await Motr("fsck", dir);
        Assert.True(code == MotrCommand.Damage, output + err);   // the leak, found in the replayed image
        AssertUnchanged(before, dir, output + err);
        Assert.Matches(@"replayed [1-9]\d* records", output);
        Assert.Contains(ReadOnlyLine + "; the log was replayed in memory only", output);
        Assert.Contains($"LEAK: block 0x{leaked:X}", output);
        Assert.Contains("b+tree 't' (0x", output);
        Assert.Contains("healthy, 30 records", output);
        Assert.Matches(@"fsck: 1 problem in 1 segment\r?\n$", output);

        // Nothing was replayed into the files: a second check replays the same and says the same.
        var again = await Motr("fsck", dir);
        Assert.Equal(Normalized(output), Normalized(again.Out));
        AssertUnchanged(before, dir, again.Out + again.Err);

        // The writing fsck gives the same report, but for the read-only line; and it does write (so the check above can tell).
        var recovered = await Motr("fsck", dir, "--recover");
        Assert.Equal(code, recovered.Code);
        var readOnlyLines = Normalized(output).Split('\n').Where(l => !l.StartsWith(ReadOnlyLine, StringComparison.Ordinal));
        Assert.Equal(string.Join('\n', readOnlyLines), Normalized(recovered.Out));
        Assert.NotEqual(before[BeConstants.LogFileName].Bytes, File.ReadAllBytes(Path.Combine(dir, BeConstants.LogFileName)));
        var after = await Motr("fsck", dir);
        Assert.Contains("replayed 0 records", after.Out);
        Assert.Contains(ReadOnlyLine + Environment.NewLine, after.Out);
    }

    /// <summary>
    /// A dump's bytes with what two dumps of the same tree may differ in blanked: the creation time in the file header
    /// (offset 64, 8 bytes) and the header's checksum over it (offset 252, 4 bytes).
    /// </summary>
    private static byte[] DumpContent(string file)
    {
        var b = File.ReadAllBytes(file);
        Assert.True(b.Length > BTreeDumpFormat.HeaderSize, $"{file}: {b.Length} bytes");
        b.AsSpan(64, 8).Clear();
        b.AsSpan(252, 4).Clear();
        return b;
    }

    // Pins the read-only dump: dump opened the domain as an engine does, so dumping a domain whose log needed replay
    // placed the records and checkpointed into the folder (a side effect of a read), and a read-only copy or snapshot
    // could not be dumped.
    [Fact]
    public async Task Dump_of_a_domain_that_needs_replay_writes_nothing_and_saves_what_a_writing_open_holds()
    {
        var (dir, _) = await CrashImage();
        var before = Stamps(dir);
        string file = Path.Combine(_root, "t.motrdump");
        var (code, output, err) = await Motr("dump", dir, "t", file);
        Assert.True(code == MotrCommand.Ok, output + err);
        Assert.Contains("dump: 30 records of 't' (segment 1) saved to", output);
        AssertUnchanged(before, dir, output + err);

        // A second dump replays the same (nothing was placed) and saves the same.
        string again = Path.Combine(_root, "again.motrdump");
        Assert.Equal(MotrCommand.Ok, (await Motr("dump", dir, "t", again)).Code);
        AssertUnchanged(before, dir, "");
        Assert.Equal(DumpContent(file), DumpContent(again));

        // After a writing open (recovery placed and checkpointed: the folder changed, so the checks above can tell), the
        // dump holds the same records.
        await (await Engine.OpenAsync(new DomainOptions { Path = dir, CreateIfMissing = false })).DisposeAsync();
        Assert.NotEqual(before[BeConstants.LogFileName].Bytes, File.ReadAllBytes(Path.Combine(dir, BeConstants.LogFileName)));
        string written = Path.Combine(_root, "written.motrdump");
        Assert.Equal(MotrCommand.Ok, (await Motr("dump", dir, "t", written)).Code);
        Assert.Equal(DumpContent(written), DumpContent(file));
    }

    // A read-only copy or snapshot: dump needs no write access to the folder or its files.
    [Fact]
    public async Task Dump_saves_a_tree_of_a_domain_whose_folder_and_files_are_read_only()
    {
        var (dir, _) = await CrashImage();
        ReadOnly(dir);
        try
        {
            var before = Stamps(dir);
            string file = Path.Combine(_root, "t.motrdump");
            var (code, output, err) = await Motr("dump", dir, "t", file);
            Assert.True(code == MotrCommand.Ok, output + err);
            Assert.Equal("", err);
            Assert.Contains("dump: 30 records of 't'", output);
            AssertUnchanged(before, dir, output + err);
        }
        finally
        {
            Writable(dir);
        }
    }

    // Readers share the folder: a dump runs while a read-only fsck has the domain open (a dump that took the folder as
    // an engine does is refused then, "in use"), and the fsck's verdict is unchanged by it; an engine keeps both out
    // (CliInUseTests).
    [Fact]
    public async Task Dump_runs_while_a_read_only_fsck_has_the_domain_open()
    {
        var (dir, leaked) = await CrashImage();
        var before = Stamps(dir);
        string file = Path.Combine(_root, "t.motrdump");
        (int Code, string Out, string Err) dump = default;
        var fsckOut = new OnLine("domain ", () => dump = Motr("dump", dir, "t", file).GetAwaiter().GetResult());
        Assert.Equal(MotrCommand.Damage, await MotrCommand.RunAsync(["fsck", dir], fsckOut, new StringWriter()));
        Assert.True(dump.Code == MotrCommand.Ok, dump.Out + dump.Err);
        Assert.Contains("dump: 30 records of 't'", dump.Out);
        Assert.Contains($"LEAK: block 0x{leaked:X}", fsckOut.ToString());
        AssertUnchanged(before, dir, dump.Out + dump.Err);
    }

    private static void ReadOnly(string dir)
    {
        if (OperatingSystem.IsWindows()) return;
        foreach (var f in Directory.GetFiles(dir)) File.SetUnixFileMode(f, UnixFileMode.UserRead | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
        File.SetUnixFileMode(dir, UnixFileMode.UserRead | UnixFileMode.UserExecute | UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute);
    }

    private static void Writable(string dir)
    {
        if (OperatingSystem.IsWindows()) return;
        File.SetUnixFileMode(dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        foreach (var f in Directory.GetFiles(dir)) File.SetUnixFileMode(f, UnixFileMode.UserRead | UnixFileMode.UserWrite);
    }

    // chmod a-w on the folder and its files: a user other than root cannot open them for writing, so the check shows
    // that fsck needs no write access; as root (whom permissions do not stop) the bytes and times compared show that it
    // wrote nothing, and the descriptor test below shows it could not have.
    [Fact]
    public async Task Fsck_checks_a_domain_whose_folder_and_files_are_read_only()
    {
        var (dir, leaked) = await CrashImage();
        ReadOnly(dir);
        try
        {
            var before = Stamps(dir);
            var (code, output, err) = await Motr("fsck", dir);
            Assert.True(code == MotrCommand.Damage, output + err);
            Assert.Equal("", err);
            Assert.Contains($"LEAK: block 0x{leaked:X}", output);
            Assert.Contains("healthy, 30 records", output);
            AssertUnchanged(before, dir, output + err);
        }
        finally
        {
            Writable(dir);
        }
    }

    /// <summary>The descriptors of this process open on files in <paramref name="dir"/>: path and whether they have write access (Linux).</summary>
    private static List<(string Path, bool Writes)> Descriptors(string dir)
    {
        var open = new List<(string, bool)>();
        string prefix = Path.GetFullPath(dir) + "/";
        foreach (var fd in Directory.EnumerateFileSystemEntries("/proc/self/fd"))
        {
            string? target;
            string flags;
            try
            {
                target = new FileInfo(fd).LinkTarget;
                if (target is null || !target.StartsWith(prefix, StringComparison.Ordinal)) continue;
                flags = File.ReadAllLines($"/proc/self/fdinfo/{Path.GetFileName(fd)}").First(l => l.StartsWith("flags:", StringComparison.Ordinal));
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { continue; }   // closed meanwhile
            int mode = Convert.ToInt32(flags["flags:".Length..].Trim(), 8) & 3;   // O_ACCMODE: 0 O_RDONLY, 1 O_WRONLY, 2 O_RDWR
            open.Add((target, mode != 0));
        }
        return open;
    }

    /// <summary>A stdout that runs <paramref name="action"/> once, when a line starting with <paramref name="prefix"/> is written.</summary>
    private sealed class OnLine(string prefix, Action action) : StringWriter
    {
        private bool _done;

        public override void WriteLine(string? value)
        {
            base.WriteLine(value);
            if (_done || value?.StartsWith(prefix, StringComparison.Ordinal) != true) return;
            _done = true;
            action();
        }
    }

    // While fsck checks (the domain open, recovery done), every descriptor this process has on the domain's files is
    // read-only (O_RDONLY): a write through any of them fails, as root too. An engine cannot open the folder meanwhile
    // (it would change the files under the check), and another read-only fsck can. fsck --recover holds the files
    // for writing (so the test can tell).
    [Fact]
    public async Task While_fsck_checks_its_descriptors_on_the_domain_are_read_only_and_an_engine_is_kept_out()
    {
        if (!OperatingSystem.IsLinux()) return;   // /proc/self/fd and fdinfo
        var (dir, _) = await CrashImage();
        var seen = new List<(string Path, bool Writes)>();
        Exception? engineOpen = null;
        int otherFsck = -1;
        var stdout = new OnLine("domain ", () =>
        {
            seen.AddRange(Descriptors(dir));
            try { Engine.OpenAsync(new DomainOptions { Path = dir, CreateIfMissing = false }).GetAwaiter().GetResult().DisposeAsync().AsTask().GetAwaiter().GetResult(); }
            catch (Exception e) { engineOpen = e; }
            otherFsck = Motr("fsck", dir).GetAwaiter().GetResult().Code;
        });
        int code = await MotrCommand.RunAsync(["fsck", dir], stdout, new StringWriter());
        Assert.True(code == MotrCommand.Damage, stdout.ToString());
        Assert.Contains(seen, d => d.Path.EndsWith("/" + BeConstants.LogFileName, StringComparison.Ordinal));
        Assert.Contains(seen, d => d.Path.EndsWith("/" + BeConstants.LockFileName, StringComparison.Ordinal));
        Assert.All(seen, d => Assert.False(d.Writes, $"{d.Path} is open for writing"));
        Assert.IsType<BeException>(engineOpen);
        Assert.Contains("the folder is in use", engineOpen!.Message);
        Assert.Equal(MotrCommand.Damage, otherFsck);

        seen.Clear();
        stdout = new OnLine("domain ", () => seen.AddRange(Descriptors(dir)));
        Assert.Equal(MotrCommand.Damage, await MotrCommand.RunAsync(["fsck", dir, "--recover"], stdout, new StringWriter()));
        Assert.Contains(seen, d => d.Writes);
    }
}
