using System.Buffers.Binary;
using Motr.Be;
using Motr.Be.Alloc;
using Motr.Be.BTree;
using Motr.Be.Segments;
using Motr.Runtime;
using Tree = Motr.Be.BTree.BTree;

namespace Motr.Cli.Tests;

/// <summary>The <c>motr</c> command run in process on real domain folders: fsck's findings and exit codes, dump and load, bad arguments.</summary>
public sealed class CliTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), $"motr-cli-{Environment.ProcessId}-{Guid.NewGuid():N}");

    public CliTests() => Directory.CreateDirectory(_root);

    public void Dispose()
    {
        try { Directory.Delete(_root, recursive: true); }
        catch (IOException) { }
    }

    private const int RecordsT = 500, RecordsU = 200;

    private static DomainOptions Options(string dir) => CliHarness.Options(dir);

    private static byte[] Key(int i) => CliHarness.Key(i);

    private static byte[] Value(int i)
    {
        var v = new byte[i % 25 == 0 ? 3000 : 40 + i % 60];   // every 25th out of node
        new Random(i).NextBytes(v);
        return v;
    }

    /// <summary>A domain of two segments: tree 't' of <see cref="RecordsT"/> records in segment 1, tree 'u' of <see cref="RecordsU"/> in segment 2.</summary>
    private async Task<string> CreateDomain(Func<Engine, Task>? more = null)
    {
        string dir = Path.Combine(_root, "domain");
        await using var engine = await Engine.OpenAsync(Options(dir));
        foreach (var (loc, name, count) in new[] { (engine.Localities[0], "t", RecordsT), (engine.Localities[1], "u", RecordsU) })
        {
            await loc.RunAsync(async () =>
            {
                var seg = loc.Segment!;
                var t = await CreateTree(seg, name);
                for (int i = 0; i < count; i++)
                {
                    using var tx = await seg.BeginAsync(t.InsertCredit(8, Value(i).Length));
                    Assert.Equal(BTreeStatus.Ok, t.Insert(tx, Key(i), Value(i)));
                    _ = tx.Close();
                }
                await seg.FlushAsync();
            });
        }
        if (more != null) await more(engine);
        return dir;
    }

    private static Task<Tree> CreateTree(Segment seg, string name) => CliHarness.CreateTree(seg, name);

    private static Task<(int Code, string Out, string Err)> Motr(params string[] args) => CliHarness.Motr(args);

    [Fact]
    public async Task Fsck_of_a_healthy_domain_lists_each_tree_and_exits_0()
    {
        string dir = await CreateDomain();
        var (code, output, err) = await Motr("fsck", dir);
        Assert.True(code == 0, output + err);
        Assert.Contains($"b+tree 't' (0x", output);
        Assert.Contains($"healthy, {RecordsT} records", output);
        Assert.Contains($"b+tree 'u' (0x", output);
        Assert.Contains($"healthy, {RecordsU} records", output);
        Assert.EndsWith("fsck: healthy" + Environment.NewLine, output);
        Assert.Equal("", err);
        // fsck changes nothing: the domain still has its two segments and is still healthy.
        Assert.Equal(0, (await Motr("fsck", dir)).Code);
        Assert.Equal(2, Directory.GetFiles(dir, "seg-*.motr").Length);
    }

    [Fact]
    public async Task Fsck_finds_a_damaged_node_names_its_offset_and_exits_1()
    {
        long leaf = 0, size = 0;
        string dir = await CreateDomain(engine => engine.Localities[0].RunAsync(() =>
        {
            var seg = engine.Localities[0].Segment!;
            Assert.True(seg.TryGetRoot("t", out long off));
            foreach (long chunk in Tree.Open(seg, off).Check().Chunks)
            {
                var head = seg.Bytes(chunk, 12);
                if (BinaryPrimitives.ReadUInt32LittleEndian(head) == BTreeFormatConstants.NodeMagic && head[6] == 0)
                {
                    leaf = chunk;
                    size = BinaryPrimitives.ReadUInt32LittleEndian(head[8..]);
                    break;
                }
            }
        }));
        Assert.NotEqual(0, leaf);
        string file = Path.Combine(dir, BeConstants.SegmentFileName(1));
        using (var f = new FileStream(file, FileMode.Open, FileAccess.ReadWrite))
        {
            f.Position = leaf + size / 2;
            int b = f.ReadByte();
            f.Position = leaf + size / 2;
            f.WriteByte((byte)(b ^ 0x5A));
        }

        var (code, output, err) = await Motr("fsck", dir);
        Assert.True(code == 1, output + err);
        Assert.Contains($"0x{leaf:X}", output);
        Assert.Contains("segment 1 (", output);
        Assert.Contains($"b+tree 'u' (0x", output);
        Assert.Contains($"healthy, {RecordsU} records", output);   // the other segment is checked too, and intact
        Assert.Matches(@"fsck: \d+ problems? in 1 segment\r?\n$", output);
    }

    [Fact]
    public async Task Fsck_of_a_domain_whose_damage_keeps_it_from_opening_reports_it_and_exits_1()
    {
        string dir = await CreateDomain();
        string file = Path.Combine(dir, BeConstants.SegmentFileName(2));
        using (var f = new FileStream(file, FileMode.Open, FileAccess.ReadWrite))
        {
            f.Position = 40;   // inside the segment header, which its checksum covers
            int b = f.ReadByte();
            f.Position = 40;
            f.WriteByte((byte)(b ^ 0x5A));
        }
        var (code, output, err) = await Motr("fsck", dir);
        Assert.True(code == 1, output + err);
        Assert.Contains("does not open", output);
        Assert.Contains(BeConstants.SegmentFileName(2), output);
        Assert.EndsWith("fsck: 1 problem (the domain does not open)" + Environment.NewLine, output);
        // Other commands cannot work on it: a failure to run, not a finding.
        Assert.Equal(2, (await Motr("dump", dir, "t", Path.Combine(_root, "t.dump"))).Code);
    }

    [Fact]
    public async Task Fsck_of_a_crashed_domain_with_a_damaged_log_record_says_so_and_truncates_only_when_asked()
    {
        // A crash image: the folder copied while the engine runs, after ten durable inserts and before any checkpoint.
        string live = Path.Combine(_root, "live"), crashed = Path.Combine(_root, "crashed");
        var options = Options(live);
        options.CheckpointInterval = TimeSpan.FromHours(1);
        options.CheckpointFraction = 0.9;
        await using (var engine = await Engine.OpenAsync(options))
        {
            var loc = engine.Localities[0];
            await loc.RunAsync(async () =>
            {
                var seg = loc.Segment!;
                var t = await CreateTree(seg, "t");
                for (int i = 0; i < 10; i++)
                {
                    using var tx = await seg.BeginAsync(t.InsertCredit(8, Value(i).Length));
                    Assert.Equal(BTreeStatus.Ok, t.Insert(tx, Key(i), Value(i)));
                    await tx.Close();   // one durable record per insert
                }
            });
            Directory.CreateDirectory(crashed);
            // The domain's files as a crash would leave them; not the lock file, which the live engine holds locked.
            foreach (var f in Directory.GetFiles(live))
                if (Path.GetFileName(f) != BeConstants.LockFileName) File.Copy(f, Path.Combine(crashed, Path.GetFileName(f)));
        }
        // Records in the log file: headers start on 512-byte boundaries with the magic "MOTRLOGR" (docs/log-and-recovery.md).
        string log = Path.Combine(crashed, BeConstants.LogFileName);
        var bytes = File.ReadAllBytes(log);
        var records = new List<(long Offset, ulong Lsn)>();
        for (long off = 0; off + 64 <= bytes.Length; off += 512)
            if (BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan((int)off)) == BeConstants.LogRecordMagic)
                records.Add((off, BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan((int)off + 16))));
        Assert.True(records.Count >= 11, $"{records.Count} records in the log");
        var (damaged, lsn) = records[records.Count / 2];
        bytes[damaged + 64 + 20] ^= 0x5A;   // inside its first group
        File.WriteAllBytes(log, bytes);

        var (code, output, err) = await Motr("fsck", crashed);
        Assert.True(code == 1, output + err);
        Assert.Contains("does not open", output);
        Assert.Contains($"lsn {lsn}", output);
        Assert.Contains("--truncate-at-corruption checks it without the damaged log record", output);
        (code, output, err) = await Motr("fsck", crashed, "--recover");
        Assert.True(code == 1, output + err);
        Assert.Contains("--truncate-at-corruption opens it", output);

        // The records discarded are damage found (exit 1), though what stays is consistent. Read-only, the log keeps
        // them (the next check finds the same); with --recover they are discarded, and the next check is clean.
        (code, output, err) = await Motr("fsck", crashed, "--truncate-at-corruption");
        Assert.True(code == 1, output + err);
        Assert.Contains("TRUNCATED", output);
        Assert.Contains($"lsn {lsn}", output);
        Assert.Contains("left out (read-only: the log still holds them)", output);
        Assert.Contains("damage: motr.log:", output);
        Assert.True(bytes.AsSpan().SequenceEqual(File.ReadAllBytes(log)), "the read-only check changed the log");
        Assert.Equal(1, (await Motr("fsck", crashed)).Code);
        (code, output, err) = await Motr("fsck", crashed, "--recover", "--truncate-at-corruption");
        Assert.True(code == 1, output + err);
        Assert.Contains("TRUNCATED", output);
        Assert.Contains($"lsn {lsn}", output);
        Assert.Contains("every later record were discarded", output);
        (code, output, err) = await Motr("fsck", crashed);
        Assert.True(code == 0, output + err);
        Assert.EndsWith("fsck: healthy" + Environment.NewLine, output);
    }

    [Fact]
    public async Task Fsck_counts_an_allocated_block_no_tree_owns_as_a_leak()
    {
        long leaked = 0;
        string dir = await CreateDomain(engine => engine.Localities[1].RunAsync(async () =>
        {
            var seg = engine.Localities[1].Segment!;
            using var tx = await seg.BeginAsync(Allocator.AllocCredit);
            leaked = seg.Allocator.Alloc(tx, 256);
            await tx.Close();
        }));
        var (code, output, err) = await Motr("fsck", dir);
        Assert.True(code == 1, output + err);
        Assert.Contains($"LEAK: block 0x{leaked:X}", output);
        Assert.Contains("segment 2 (", output);
    }

    [Fact]
    public async Task Fsck_does_not_call_the_blocks_of_a_root_that_is_no_tree_damage()
    {
        string dir = await CreateDomain(engine => engine.Localities[1].RunAsync(async () =>
        {
            var seg = engine.Localities[1].Segment!;
            using var tx = await seg.BeginAsync(Allocator.AllocCredit + Segment.RootCredit);
            long blob = seg.Allocator.Alloc(tx, 256);
            seg.SetRoot(tx, "blob", blob);
            await tx.Close();
        }));
        var (code, output, err) = await Motr("fsck", dir);
        Assert.True(code == 0, output + err);
        Assert.Contains("note: root 'blob'", output);
        Assert.Contains("not a b+tree", output);
        Assert.Contains("1 allocated block (256 bytes) belonging to no checked tree", output);
    }

    [Fact]
    public async Task Fsck_of_a_folder_without_a_domain_exits_2_and_says_so()
    {
        string missing = Path.Combine(_root, "nothing-here");
        var (code, output, err) = await Motr("fsck", missing);
        Assert.Equal(2, code);
        Assert.Equal("", output);
        Assert.Contains($"motr fsck: no folder {missing}", err);

        string empty = Path.Combine(_root, "empty");
        Directory.CreateDirectory(empty);
        (code, output, err) = await Motr("fsck", empty);
        Assert.Equal(2, code);
        Assert.StartsWith("motr fsck: ", err);
        Assert.Empty(Directory.GetFiles(empty));   // nothing created
    }

    [Fact]
    public async Task Dump_and_load_copy_a_tree_under_a_new_name_into_another_segment()
    {
        string dir = await CreateDomain();
        string file = Path.Combine(_root, "t.motrdump");
        var (code, output, err) = await Motr("dump", dir, "t", file);
        Assert.True(code == 0, output + err);
        Assert.Contains($"dump: {RecordsT} records of 't' (segment 1) saved to {file}", output);
        Assert.False(File.Exists(file + ".partial"));

        (code, output, err) = await Motr("load", dir, file, "t2", "--segment", "2");
        Assert.True(code == 0, output + err);
        Assert.Contains($"load: {RecordsT} records from {file} into 't2' (segment 2)", output);

        (code, output, err) = await Motr("fsck", dir);
        Assert.True(code == 0, output + err);
        Assert.Contains($"b+tree 't2' (0x", output);

        await using var engine = await Engine.OpenAsync(Options(dir));
        var loc = engine.Localities[1];
        await loc.RunAsync(() =>
        {
            var seg = loc.Segment!;
            Assert.True(seg.TryGetRoot("t2", out long off));
            var copy = Tree.Open(seg, off);
            Assert.Equal(RecordsT, copy.Count);
            for (int i = 0; i < RecordsT; i++)
            {
                Assert.Equal(BTreeStatus.Ok, copy.Lookup(Key(i), out ReadOnlySpan<byte> v));
                Assert.True(v.SequenceEqual(Value(i)), $"record {i}");
            }
        });
    }

    [Fact]
    public async Task Dump_of_a_missing_root_and_load_under_a_taken_name_are_refused_with_what_is_there()
    {
        string dir = await CreateDomain();
        string file = Path.Combine(_root, "x.motrdump");
        var (code, output, err) = await Motr("dump", dir, "nope", file);
        Assert.Equal(2, code);
        Assert.Contains("segment 1 has no root 'nope' (its roots: 't')", err);
        Assert.False(File.Exists(file));
        Assert.False(File.Exists(file + ".partial"));

        Assert.Equal(0, (await Motr("dump", dir, "u", file, "--segment", "2")).Code);
        (code, output, err) = await Motr("load", dir, file, "t");
        Assert.Equal(2, code);
        Assert.Contains("segment 1: root 't' already names 0x", err);
        (code, output, err) = await Motr("dump", dir, "t", file + "3", "--segment", "3");
        Assert.Equal(2, code);
        Assert.Contains("the domain has 2 segments; there is no segment 3", err);
    }

    [Fact]
    public async Task Dump_replaces_nothing_unless_forced_and_never_writes_into_the_domain()
    {
        string dir = await CreateDomain();
        string file = Path.Combine(_root, "t.motrdump");
        Assert.Equal(0, (await Motr("dump", dir, "t", file)).Code);
        long size = new FileInfo(file).Length;
        File.WriteAllText(file, "precious");
        // Before, each of these replaced its target (a domain file too, making the domain unopenable).
        var (code, _, err) = await Motr("dump", dir, "t", file);
        Assert.Equal(2, code);
        Assert.Contains("exists; --force replaces it", err);
        Assert.Equal("precious", File.ReadAllText(file));
        (code, _, err) = await Motr("dump", dir, "t", Path.Combine(dir, BeConstants.LogFileName), "--force");
        Assert.Equal(2, code);
        Assert.Contains("inside the domain folder", err);
        string folder = Path.Combine(_root, "sub");
        Directory.CreateDirectory(folder);
        (code, _, err) = await Motr("dump", dir, "t", folder);
        Assert.Equal(2, code);
        Assert.Contains("is a folder", err);
        Assert.False(File.Exists(folder + ".partial"));
        (code, _, err) = await Motr("dump", dir, "t", Path.Combine(_root, "no", "such", "x.motrdump"));
        Assert.Equal(2, code);
        Assert.Contains("no folder", err);
        Assert.Equal(0, (await Motr("dump", dir, "t", file, "--force")).Code);
        Assert.Equal(size, new FileInfo(file).Length);
        Assert.Equal(0, (await Motr("fsck", dir)).Code);
    }

    [Fact]
    public async Task A_load_names_its_tree_only_when_complete_and_the_next_load_removes_an_interrupted_ones_tree()
    {
        // What a load killed mid-way leaves: a partial tree under the load's working name, not under the name asked for.
        string dir = await CreateDomain(engine => engine.Localities[0].RunAsync(async () =>
        {
            var seg = engine.Localities[0].Segment!;
            var partial = await CreateTree(seg, TreeFileCommands.LoadingRoot);
            for (int i = 0; i < 50; i++)
            {
                using var tx = await seg.BeginAsync(partial.InsertCredit(8, Value(i).Length));
                partial.Insert(tx, Key(i), Value(i));
                await tx.Close();
            }
        }));
        string file = Path.Combine(_root, "u.motrdump");
        Assert.Equal(0, (await Motr("dump", dir, "u", file, "--segment", "2")).Code);
        var (code, output, err) = await Motr("load", dir, file, "u2");
        Assert.True(code == 0, output + err);
        Assert.Contains($"removing the partial tree an interrupted load left (50 records, root '{TreeFileCommands.LoadingRoot}')", err);
        Assert.Contains($"load: {RecordsU} records from {file} into 'u2' (segment 1)", output);
        (code, output, err) = await Motr("fsck", dir);
        Assert.True(code == 0, output + err);
        Assert.DoesNotContain(TreeFileCommands.LoadingRoot, output);

        // Interrupted before it starts: exit 130, nothing named.
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        code = await MotrCommand.RunAsync(["load", dir, file, "u3"], stdout, stderr, cancelled.Token);
        Assert.Equal(MotrCommand.Interrupted, code);
        Assert.Contains("interrupted", stderr.ToString());
        await using var engine = await Engine.OpenAsync(Options(dir));
        var seg1 = engine.Localities[0];
        Assert.False(await seg1.RunAsync(() => seg1.Segment!.TryGetRoot("u3", out _) || seg1.Segment!.TryGetRoot(TreeFileCommands.LoadingRoot, out _)));
    }

    [Fact]
    public async Task Fsck_reports_a_damaged_log_header_slot_and_a_tree_header_with_a_damaged_magic()
    {
        string dir = await CreateDomain();
        string log = Path.Combine(dir, BeConstants.LogFileName);
        var bytes = File.ReadAllBytes(log);
        bytes[20] ^= 0x01;   // header slot 0, inside its checksummed fields
        File.WriteAllBytes(log, bytes);
        // Before: "fsck: healthy", exit 0, with the log's second copy of its checkpoint gone.
        var (code, output, err) = await Motr("fsck", dir);
        Assert.True(code == 1, output + err);
        Assert.Contains("damage: motr.log: header slot 0: checksum mismatch", output);
        Assert.Contains("the next open (or fsck --recover) rewrites this one from it", output);
        Assert.Equal(1, (await Motr("fsck", dir)).Code);   // read-only: the slot is still damaged
        (code, output, err) = await Motr("fsck", dir, "--recover");
        Assert.True(code == 1, output + err);
        Assert.Contains("damage: motr.log: header slot 0: checksum mismatch; the other slot served, and recovery rewrote this one from it", output);
        (code, output, err) = await Motr("fsck", dir);   // fsck --recover rewrote the slot
        Assert.True(code == 0, output + err);

        long header = 0;
        await using (var engine = await Engine.OpenAsync(Options(dir)))
        {
            var loc = engine.Localities[0];
            header = await loc.RunAsync(() => loc.Segment!.TryGetRoot("t", out long off) ? off : 0);
        }
        string seg1 = Path.Combine(dir, BeConstants.SegmentFileName(1));
        bytes = File.ReadAllBytes(seg1);
        bytes[header] ^= 0xFF;   // the tree magic's first byte
        File.WriteAllBytes(seg1, bytes);
        // Before: a note ("not a b+tree ... not checked") and exit 0; the tree was lost from view.
        (code, output, err) = await Motr("fsck", dir);
        Assert.True(code == 1, output + err);
        Assert.Contains($"root 't' (0x{header:X}): b+tree header with a damaged magic", output);
    }

    [Fact]
    public async Task Bad_arguments_exit_2_with_the_usage_and_help_exits_0()
    {
        foreach (var args in new[] { new[] { "frob" }, ["fsck"], ["fsck", "a", "b"], ["dump", "dir"], ["fsck", "dir", "--fast"], ["load", "d", "f", "r", "--segment", "0"], [] })
        {
            var (code, output, err) = await Motr(args);
            Assert.True(code == 2, $"motr {string.Join(' ', args)}: exit {code}");
            Assert.Equal("", output);
            Assert.Contains("usage:", err);
        }
        var help = await Motr("help");
        Assert.Equal(0, help.Code);
        Assert.Contains("motr fsck <domain-folder>", help.Out);
    }
}
