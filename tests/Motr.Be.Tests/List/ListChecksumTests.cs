using Motr.Be.List;
using Motr.Be.Tests.TestSupport;
using Motr.Be.Tx;

namespace Motr.Be.Tests.List;

public class ListChecksumTests
{
    private const long Head = 8192, E1 = 8192 + 64, E2 = 8192 + 128;

    [Fact]
    public async Task A_damaged_list_head_is_found_on_first_read_after_reopen()
    {
        using var dir = new TempDir();
        var o = Engines.Options(dir.Path, segments: 1);
        await using (var e = await Engines.Open(o))
        {
            var loc = e.Localities[0];
            await loc.RunAsync(async () =>
            {
                var seg = loc.Segment!;
                using var tx = await seg.BeginAsync(PersistentList.CreateCredit + PersistentList.AddTailCredit * 2);
                PersistentList.Create(tx, seg, Head);
                var list = new PersistentList(seg, Head, 0);
                list.AddTail(tx, E1);
                list.AddTail(tx, E2); // the head changes three times in one session: no false alarm
                await tx.Close();
                Assert.Equal(2, list.Count);
            });
        }
        await using (var e = await Engines.Open(o))
        {
            var loc = e.Localities[0];
            Assert.Equal(2, await loc.RunAsync(() => new PersistentList(loc.Segment!, Head, 0).Count)); // intact: verifies
        }
        using (var f = File.OpenHandle(Path.Combine(dir.Path, "seg-0001.motr"), FileMode.Open, FileAccess.ReadWrite))
        {
            var b = new byte[1];
            RandomAccess.Read(f, b, Head + 40);
            b[0] ^= 1; // the reserved field: only the checksum can notice
            RandomAccess.Write(f, b, Head + 40);
        }
        await using (var e = await Engines.Open(o))
        {
            var loc = e.Localities[0];
            var ex = await Assert.ThrowsAsync<BeCorruptionException>(() => loc.RunAsync(() => new PersistentList(loc.Segment!, Head, 0).Count));
            Assert.Contains("list head checksum mismatch", ex.Message);
            Assert.Equal(Head, ex.Offset);
        }
    }
}
