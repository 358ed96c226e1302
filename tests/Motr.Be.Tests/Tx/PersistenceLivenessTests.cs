using Motr.Be.Tests.TestSupport;
using Motr.Be.Tx;

namespace Motr.Be.Tests.Tx;

/// <summary>
/// Liveness of the persistence path: a transaction awaited until durable always completes. The log
/// writer reports durability from its own thread while the locality runs the completions of earlier
/// groups; a lost hand-off between the two leaves writers waiting forever with every thread idle.
/// </summary>
public class PersistenceLivenessTests
{
    private const long Off = Engines.DataStart;

    [Fact]
    public async Task Every_awaited_persistence_completes_under_many_writers_on_two_localities()
    {
        using var dir = new TempDir();
        var o = Engines.Options(dir.Path, logSize: 64 << 20);
        await using var e = await Engines.Open(o);
        const int Writers = 256, Each = 400;
        var done = new long[e.Localities.Count];
        var run = Task.WhenAll(e.Localities.Select((loc, l) => loc.RunAsync(async () =>
        {
            var seg = loc.Segment!;
            async Task Writer(int w)
            {
                for (int i = 0; i < Each; i++)
                {
                    TxPersistence persisted;
                    using (var tx = await seg.BeginAsync(TxCredit.Region(8)))
                    {
                        tx.Capture<long>(Off + 8 * w) = i + 1;
                        persisted = tx.Close();
                    }
                    await persisted;
                    done[l]++;
                }
            }
            await Task.WhenAll(Enumerable.Range(0, Writers).Select(Writer));
        })));
        // Not a speed bound: 200k small transactions take seconds; a lost wake-up never finishes.
        var finished = await Task.WhenAny(run, Task.Delay(TimeSpan.FromMinutes(2)));
        Assert.True(finished == run, $"awaited persistence hung: {string.Join(", ", done.Select((n, l) => $"locality {l} completed {n:N0} of {Writers * Each:N0}"))}");
        await run;
        foreach (var loc in e.Localities)
            await loc.RunAsync(() =>
            {
                for (int w = 0; w < Writers; w++) Assert.Equal(Each, loc.Segment!.At<long>(Off + 8 * w));
            });
    }
}
