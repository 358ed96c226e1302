using Motr.Be.Storage;
using Motr.Be.Tests.TestSupport;
using Motr.Be.Tx;

namespace Motr.Be.Tests.Tx;

/// <summary>
/// A segment file that cannot be written or synced (a full or failing volume under it): the domain stops taking
/// transactions with an error naming the file, and nothing reported persistent is lost, because the log is
/// released only by a checkpoint that completed.
/// </summary>
public class CheckpointFaultTests
{
    private const long Off = Engines.DataStart;
    private const int N = 64;

    // SimStorage has no stage: placing writes each region to the file (so a write fault fails placing), and a
    // checkpoint syncs it (so a flush fault fails the checkpoint). On FileStorage both reach the file at the
    // checkpoint; either way the domain fails the same.
    [Theory]
    [InlineData(SimFault.Write, "placing failed")]
    [InlineData(SimFault.Flush, "checkpoint failed")]
    public async Task A_segment_file_that_cannot_be_written_fails_the_domain_and_loses_nothing_persisted(SimFault kind, string failed)
    {
        var storage = new SimStorage();
        string file = BeConstants.SegmentFileName(1);
        int persisted;
        await using (var e = await Engines.Open(Engines.Sim(storage)))
        {
            var loc = e.Localities[0];
            Assert.Equal(1ul, loc.Segment!.Id);
            // Armed once the first transaction is persistent: a transaction whose record the placer fails on before
            // the log writer has marked it durable may be reported failed (safe, but it would make this run vacuous).
            persisted = await WriteUntilRefused(loc, first: 1, afterFirst: () => storage.FailAfter(0, kind, file));
            Assert.True(persisted >= 1, "no transaction was reported persistent: the log should not have failed");

            var ex = await Assert.ThrowsAsync<LogFailedException>(() => e.Domain.CheckpointAsync());
            Assert.Same(ex, e.Domain.Failure);
            Assert.Contains(failed, ex.Message);
            Assert.Contains(file, ex.Message);
            // Fail-stop for the whole domain: the other segment's file is fine, but a domain whose pages may not
            // have reached their file takes no more transactions.
            var other = e.Localities[1];
            await Assert.ThrowsAsync<LogFailedException>(() => other.RunAsync(async () =>
            {
                using var tx = await other.Segment!.BeginAsync(TxCredit.Region(8));
            }));
            // What is in memory still reads.
            Assert.Equal(1, await loc.RunAsync(() => loc.Segment.At<long>(Off)));
        }
        storage.ClearFault();

        // The device as the failed domain left it when it closed, and as a power cut at that point leaves it.
        var images = new[] { storage.Clone(), storage.CrashImage(storage.OpCount, CrashVariant.DropUnsynced, 0) };
        foreach (var image in images)
        {
            await using var e = await Engines.Open(Engines.Sim(image));
            var loc = e.Localities[0];
            var seg = loc.Segment!;
            long k = seg.LastTxId;
            Assert.InRange(k, persisted, N);
            Assert.True(e.Domain.Recovery.RecordsReplayed > 0, "nothing was replayed: the failure released the log");
            // Exactly the first k transactions, each whole.
            for (int i = 0; i < N; i++) Assert.Equal(i < k ? i + 1 : 0, await loc.RunAsync(() => seg.At<long>(Off + 8 * i)));
            // And it works as before: more transactions, a checkpoint that completes.
            Assert.Equal(N, await WriteUntilRefused(loc, first: 1001));
            await e.Domain.CheckpointAsync();
            Assert.Null(e.Domain.Failure);
            Assert.Equal(1001 + N - 1, await loc.RunAsync(() => seg.At<long>(Off + 8 * (N - 1))));
        }
    }

    [Fact]
    public async Task A_checkpoint_asked_of_a_closed_domain_is_refused_not_left_waiting()
    {
        var storage = new SimStorage();
        var e = await Engines.Open(Engines.Sim(storage));
        await WriteUntilRefused(e.Localities[0], first: 1);
        await e.DisposeAsync();
        // The placer's thread is gone: a checkpoint nobody will take must not wait forever.
        var ex = await Assert.ThrowsAsync<ObjectDisposedException>(() => e.Domain.CheckpointAsync().WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Contains("closed", ex.Message);
    }

    /// <summary>Sets word i to first + i, one transaction each, until the domain refuses; returns how many were reported persistent.</summary>
    private static Task<int> WriteUntilRefused(Runtime.Locality loc, long first, Action? afterFirst = null) => loc.RunAsync(async () =>
    {
        var seg = loc.Segment!;
        for (int i = 0; i < N; i++)
        {
            try
            {
                using var tx = await seg.BeginAsync(TxCredit.Region(8));
                tx.Capture<long>(Off + 8 * i) = first + i;
                await tx.Close();
                if (i == 0) afterFirst?.Invoke();
            }
            catch (LogFailedException)
            {
                return i;
            }
        }
        return N;
    });
}
