using Motr.Be.Tests.TestSupport;
using Motr.Be.Tx;
using Motr.Runtime;
using Xunit.Abstractions;

namespace Motr.Be.Tests.Tx;

/// <summary>
/// Long random sequences of open/capture/close/abort (several txs open at once, overlapping captures,
/// payloads, persistence awaited or not) on two localities, compared with a plain byte-array model
/// after every step and after every close-and-reopen.
/// </summary>
/// <remarks>
/// Transactions have no isolation (DESIGN §3: ACID without I): if two open transactions capture the
/// same bytes and the first aborts, it restores bytes the second wrote. So transactions open at the
/// same time get disjoint areas here; a transaction open alone may overlap anything, including the hot area.
/// </remarks>
public class TxModelTests(ITestOutputHelper output)
{
    private const int SegmentSize = 1 << 20;
    private const int DataStart = 4096;
    private const int Hot = DataStart + 64 * 16;   // [DataStart, Hot): the hot area many txs overlap in
    private const int MaxLen = 600;

    private sealed class Model(int seed)
    {
        public readonly byte[] Bytes = new byte[SegmentSize];
        public readonly Random Rng = new(seed);
        public long Closed, Aborted, Steps;
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public async Task Random_tx_sequences_match_the_model_after_every_step_and_reopen(int seed)
    {
        using var dir = new TempDir();
        const int Rounds = 6, StepsPerRound = 2500;
        var models = new[] { new Model(seed * 100 + 1), new Model(seed * 100 + 2) };
        var o = Engines.Options(dir.Path, segments: 2, segmentSize: SegmentSize, logSize: 2 << 20);
        for (int round = 0; round < Rounds; round++)
        {
            await using var e = await Engines.Open(o);
            for (int i = 0; i < 2; i++) await e.Localities[i].RunAsync(() => CompareAll(e.Localities[i].Segment!, models[i], $"after reopen {round}"));
            var runs = new Task[2];
            for (int i = 0; i < 2; i++)
            {
                var loc = e.Localities[i];
                var m = models[i];
                runs[i] = loc.RunAsync(() => Steps(loc, m, StepsPerRound));
            }
            await Task.WhenAll(runs);
            for (int i = 0; i < 2; i++) Assert.Equal(models[i].Closed, e.Localities[i].Segment!.LastTxId);
        }
        output.WriteLine($"seed {seed}: {models[0].Steps + models[1].Steps} steps, closed {models[0].Closed}+{models[1].Closed}, " +
            $"aborted {models[0].Aborted}+{models[1].Aborted}, {Rounds} reopens");
    }

    private static void CompareAll(Segments.Segment seg, Model m, string when) =>
        CompareRange(seg, m, DataStart, SegmentSize - DataStart, when);

    private static void CompareRange(Segments.Segment seg, Model m, long off, int len, string when)
    {
        var live = seg.Bytes(off, len);
        var want = m.Bytes.AsSpan((int)off, len);
        if (live.SequenceEqual(want)) return;
        int at = live.CommonPrefixLength(want);
        Assert.Fail($"segment {seg.Id} {when}: first difference at offset {off + at}: {live[at]} != model {want[at]}");
    }

    private static async Task Steps(Locality loc, Model m, int count)
    {
        var seg = loc.Segment!;
        var rng = m.Rng;
        var open = new List<(Transaction Tx, List<(long Off, byte[] Data)> Writes)>();
        var touched = new List<(long Off, int Len)>();
        TxPersistence last = default;
        for (int step = 0; step < count; step++, m.Steps++)
        {
            int n = rng.Next(10) == 0 ? rng.Next(2, 4) : 1;
            for (int t = 0; t < n; t++)
            {
                int regions = rng.Next(1, 9);
                var tx = await seg.BeginAsync(new TxCredit(regions, regions * MaxLen + 64));
                open.Add((tx, new()));
            }
            // No await from the first capture until every open tx is closed or aborted.
            long stripe = (SegmentSize - Hot) / n;
            for (int t = 0; t < n; t++)
            {
                var (tx, writes) = open[t];
                int k = rng.Next(1, tx.Credit.Regions + 1);
                for (int c = 0; c < k; c++)
                {
                    int len = rng.Next(1, MaxLen);
                    long off = n == 1 && rng.Next(10) < 3
                        ? rng.Next(DataStart, Hot)                                   // overlaps other txs over time
                        : Hot + t * stripe + rng.NextInt64(0, stripe - len);          // this tx's own stripe
                    len = (int)Math.Min(len, SegmentSize - off);
                    var span = tx.Capture(off, len);
                    rng.NextBytes(span);
                    writes.Add((off, span.ToArray()));
                    touched.Add((off, len));
                }
                if (rng.Next(8) == 0) tx.SetPayload(new byte[rng.Next(0, 64)]);
            }
            Shuffle(open, rng);
            foreach (var (tx, writes) in open)
            {
                if (rng.Next(4) == 0)
                {
                    tx.Abort();
                    m.Aborted++;
                }
                else
                {
                    last = tx.Close();
                    m.Closed++;
                    foreach (var (off, data) in writes) data.CopyTo(m.Bytes, off);
                }
                tx.Dispose();
            }
            open.Clear();
            foreach (var (off, len) in touched) CompareRange(seg, m, off, len, $"step {m.Steps}");
            touched.Clear();
            if (step % 500 == 0) CompareAll(seg, m, $"step {m.Steps}");
            if (step % 97 == 0) await last;            // sometimes wait for durability,
            else if (step % 13 == 0) await Task.Yield(); // sometimes just end the turn
        }
        await last;
        CompareAll(seg, m, $"end of round at step {m.Steps}");
    }

    private static void Shuffle<T>(List<T> list, Random rng)
    {
        for (int i = list.Count - 1; i > 0; i--)
        {
            int j = rng.Next(i + 1);
            (list[i], list[j]) = (list[j], list[i]);
        }
    }
}
