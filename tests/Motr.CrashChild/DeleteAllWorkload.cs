using System.Buffers.Binary;
using Motr.Be.BTree;
using Motr.Be.Segments;
using Motr.Be.Tx;
using Motr.Runtime;

namespace Motr.CrashChild;

/// <summary>
/// The "deleteall" workload. Per locality (segment): a b+tree of 512-byte nodes (named root
/// <see cref="BTreeWorkload.RootName"/>) that is filled with the keys 1..<see cref="Keys"/> in order (two inserts a
/// transaction), emptied with <see cref="BTree.DeleteAllAsync"/> (smallest keys first, a batch a transaction), filled
/// again, and so on until the process is killed. A child that finds a half-emptied tree after a kill resumes the
/// delete-all; one that finds a half-filled tree resumes the fill. So every recovered tree holds either the keys 1..n
/// (filling) or the keys m..<see cref="Keys"/> (emptying), each with its value; anything else, a batch half applied, is
/// damage. The counter printed (<c>P &lt;locality&gt; &lt;tx id&gt;</c>) is the id of each transaction once it is
/// persistent, and the recovered counter is the segment's last transaction id.
/// </summary>
public static class DeleteAllWorkload
{
    /// <summary>Keys a full tree holds.</summary>
    public const int Keys = 160;

    /// <summary>Records per delete-all transaction asked for (the log of <see cref="ChildConfig"/> cuts it shorter at times).</summary>
    public const int Batch = 12;

    /// <summary>Checks by <see cref="ReadAndCheck"/> (in this process) that found a tree part-way through a delete-all, and part-way through a fill.</summary>
    public static int RecoveredMidDeleteAll, RecoveredMidFill;

    /// <summary>
    /// Checks that <paramref name="seg"/> (recovered, with no owner running) holds a state of this workload and
    /// returns its last transaction id: the tree opens, fsck finds it healthy, it holds the keys 1..n or m..Keys with
    /// their values, and its chunks are exactly the allocator's blocks. Problem is null if so.
    /// </summary>
    public static (long Counter, string? Problem) ReadAndCheck(Segment seg, int locality)
    {
        long last = seg.LastTxId;
        string at = $"locality {locality} (segment {seg.Id}, last tx {last})";
        try
        {
            if (!seg.TryGetRoot(BTreeWorkload.RootName, out long off))
                return (last, last == 0 ? null : $"{at}: no tree, but {last} txs were recovered");
            var t = BTree.Open(seg, off);
            if (TreeChecks.Segment(seg, t, out long fsckRecords) is { } bad) return (last, $"{at}: {bad}");
            var (first, count, problem) = Shape(t, locality);
            if (problem != null) return (last, $"{at}: {problem}");
            if (count != 0 && first != 1 && first + count - 1 != Keys)
                return (last, $"{at}: keys {first}..{first + count - 1}: neither a fill (1..n) nor a delete-all (m..{Keys}) would leave these");
            if (t.Count != count || fsckRecords != count) return (last, $"{at}: {count} records found, the header counts {t.Count}, fsck {fsckRecords}");
            if (count > 0 && first > 1) Interlocked.Increment(ref RecoveredMidDeleteAll);
            else if (count > 0 && count < Keys) Interlocked.Increment(ref RecoveredMidFill);
            return (last, null);
        }
        catch (Exception e)
        {
            return (last, $"{at}: checking the tree threw {e.GetType().Name}: {e.Message}");
        }
    }

    /// <summary>The tree's keys as a run first..first+count-1, each with its value; a problem if they are not consecutive or a value differs.</summary>
    private static (long First, long Count, string? Problem) Shape(BTree t, int locality)
    {
        long first = 0, count = 0;
        var c = t.OpenCursor();
        for (bool ok = c.SeekFirst(); ok; ok = c.MoveNext())
        {
            if (c.Key.Length != 8) return (first, count, $"a key of {c.Key.Length} bytes: {Convert.ToHexString(c.Key)}");
            long k = BinaryPrimitives.ReadInt64BigEndian(c.Key);
            if (count == 0) first = k;
            else if (k != first + count) return (first, count, $"keys {first}..{first + count - 1} then {k}: not consecutive");
            if (k < 1 || k > Keys) return (first, count, $"key {k} is outside 1..{Keys}");
            if (!c.Value.SequenceEqual(BTreeWorkload.Value(locality, k))) return (first, count, $"key {k} holds a value of {c.Value.Length} bytes, not its own");
            count++;
        }
        return (first, count, null);
    }

    /// <summary>Runs until the process is killed: per locality, fill and empty its tree again and again, printing each persistent tx's id.</summary>
    public static Task RunAsync(Engine engine, TextWriter stdout, CancellationToken ct)
    {
        var tasks = new List<Task>();
        foreach (var loc in engine.Localities)
        {
            var seg = loc.Segment!;
            int index = loc.Index;
            tasks.Add(loc.RunAsync(async () =>
            {
                BTree t;
                if (seg.TryGetRoot(BTreeWorkload.RootName, out long off)) t = BTree.Open(seg, off);
                else
                {
                    using var tx = await seg.BeginAsync(BTree.CreateCredit + Segment.RootCredit);
                    t = BTree.Create(tx, seg, new BTreeConfig { NodeSize = BTreeWorkload.NodeSize });
                    seg.SetRoot(tx, BTreeWorkload.RootName, t.Offset);
                    await tx.Close();
                    stdout.WriteLine($"P {index} {seg.LastTxId}");
                }
                var progress = new SyncProgress(_ => stdout.WriteLine($"P {index} {seg.LastTxId}"));
                while (!ct.IsCancellationRequested)
                {
                    var (first, count, problem) = Shape(t, index);
                    if (problem != null) throw new InvalidOperationException($"locality {index}: {problem}");
                    // Emptying: a full tree, or one that lost its smallest keys. Filling: an empty tree, or one holding 1..n.
                    if (count == Keys || (count > 0 && first > 1)) await t.DeleteAllAsync(Batch, progress, ct);
                    else await FillAsync(t, seg, index, count + 1, stdout, ct);
                }
            }));
        }
        return Task.WhenAll(tasks);
    }

    private static async Task FillAsync(BTree t, Segment seg, int index, long next, TextWriter stdout, CancellationToken ct)
    {
        while (next <= Keys && !ct.IsCancellationRequested)
        {
            int n = (int)Math.Min(2, Keys - next + 1);
            TxCredit Credit() => t.InsertCredit(8, BTreeWorkload.MaxValue) * n;
            var credit = Credit();
            using var tx = await seg.BeginAsync(credit, ct);
            // The tree may have grown while this waited for log space: then the credit is short; try again.
            if (!credit.Covers(Credit()))
            {
                tx.Abort();
                continue;
            }
            for (long k = next; k < next + n; k++)
            {
                var st = t.Insert(tx, BTreeWorkload.Key(k), BTreeWorkload.Value(index, k));
                if (st != BTreeStatus.Ok) throw new InvalidOperationException($"locality {index}: insert of key {k} returned {st}");
            }
            await tx.Close();
            stdout.WriteLine($"P {index} {seg.LastTxId}");
            next += n;
        }
    }

    /// <summary>Passes each report on at once, on the reporting thread (the locality), unlike <see cref="Progress{T}"/>, which posts it.</summary>
    public sealed class SyncProgress(Action<long> report) : IProgress<long>
    {
        /// <inheritdoc />
        public void Report(long value) => report(value);
    }
}
