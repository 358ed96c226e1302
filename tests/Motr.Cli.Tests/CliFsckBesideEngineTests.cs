using Motr.Be;
using Motr.Be.BTree;
using Motr.Runtime;

namespace Motr.Cli.Tests;

/// <summary>
/// <c>motr fsck</c> (read-only) run again and again beside an engine that opens the folder, inserts into a tree and
/// closes, over and over: each run either reports the folder in use by the engine (exit 2, naming the lock) or checks a
/// healthy domain (exit 0) holding a prefix of the engine's history that includes everything it had acknowledged; never
/// damage, another failure, or a descriptor left open on the folder. Bounded by work, never by time.
/// </summary>
public sealed class CliFsckBesideEngineTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), $"motr-cli-soak-{Environment.ProcessId}-{Guid.NewGuid():N}");
    public void Dispose() { try { Directory.Delete(_dir, true); } catch (IOException) { } }

    private const int Cycles = 8, PerCycle = 8;

    [Fact]
    public async Task Fsck_beside_an_engine_restarting_is_refused_for_the_lock_or_finds_a_healthy_acknowledged_prefix()
    {
        if (!OperatingSystem.IsLinux()) return;   // /proc/self/fd
        await using (var e = await Engine.OpenAsync(CliHarness.Options(_dir)))
        {
            var loc = e.Localities[0];
            await loc.RunAsync(async () => { await CliHarness.CreateTree(loc.Segment!, "t"); });
        }
        long acknowledged = 0, attempted = 0;
        var failures = new List<string>();
        int healthy = 0, refused = 0, opens = 0;
        var writer = Task.Run(async () =>
        {
            int next = 0;
            for (int c = 0; c < Cycles; c++)
            {
                Engine e;
                while (true)
                {
                    try { e = await Engine.OpenAsync(CliHarness.Options(_dir)); break; }
                    catch (BeException ex) when (ex.Message.Contains("the folder is in use", StringComparison.Ordinal)) { await Task.Delay(1); }
                }
                Interlocked.Increment(ref opens);
                await using (e)
                {
                    var loc = e.Localities[0];
                    next = await loc.RunAsync(async () =>
                    {
                        var seg = loc.Segment!;
                        Assert.True(seg.TryGetRoot("t", out long off));
                        var t = BTree.Open(seg, off);
                        int n = next;
                        for (int i = 0; i < PerCycle; i++, n++)
                        {
                            using var tx = await seg.BeginAsync(t.InsertCredit(8, 40));
                            Volatile.Write(ref attempted, n + 1);
                            Assert.Equal(BTreeStatus.Ok, t.Insert(tx, CliHarness.Key(n), new byte[40]));
                            await tx.Close();
                            Volatile.Write(ref acknowledged, n + 1);
                        }
                        return n;
                    });
                }
            }
        });
        async Task FsckOnce()
        {
            long before = Volatile.Read(ref acknowledged);
            var (code, stdout, stderr) = await CliHarness.Motr("fsck", _dir);
            long after = Volatile.Read(ref attempted);
            if (code == MotrCommand.Failed && stderr.Contains("the folder is in use", StringComparison.Ordinal) && stderr.Contains(BeConstants.LockFileName, StringComparison.Ordinal))
            {
                refused++;
                await Task.Delay(1);
                return;
            }
            if (code != MotrCommand.Ok)
            {
                failures.Add($"exit {code}: {stdout} {stderr}");
                return;
            }
            // The tree's line: "  b+tree 't' (0x...): healthy, N records, ..."
            var line = stdout.Split('\n').FirstOrDefault(l => l.Contains("b+tree 't'", StringComparison.Ordinal) && l.Contains("records", StringComparison.Ordinal));
            var words = line?.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            int at = words is null ? -1 : Array.IndexOf(words, "records,") - 1;
            if (at < 0 || !long.TryParse(words![at], out long records)) { failures.Add($"no record count in: {stdout}"); return; }
            if (records < before || records > after) failures.Add($"{records} records, not between the {before} acknowledged before and the {after} attempted after: {stdout}");
            else healthy++;
        }
        while (!writer.IsCompleted)
        {
            int seen = Volatile.Read(ref opens), before = healthy;
            await FsckOnce();
            // Checked: wait for the engine's next open (back-to-back checks would keep it out).
            if (healthy > before) while (Volatile.Read(ref opens) == seen && !writer.IsCompleted) await Task.Delay(1);
        }
        await writer;
        await FsckOnce();
        Assert.True(failures.Count == 0, string.Join("\n---\n", failures.Take(3)));
        Assert.True(healthy >= 1);
        Assert.Equal(Cycles * PerCycle, acknowledged);
        string prefix = Path.GetFullPath(_dir) + "/";
        var open = Directory.EnumerateFileSystemEntries("/proc/self/fd")
            .Select(fd => { try { return new FileInfo(fd).LinkTarget; } catch (IOException) { return null; } })
            .Where(t => t != null && t.StartsWith(prefix, StringComparison.Ordinal)).ToList();
        Assert.Empty(open);
    }
}
