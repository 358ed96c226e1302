using Motr.Be.Storage;
using Motr.Be.Tests.TestSupport;

namespace Motr.Be.Tests.Storage;

/// <summary><see cref="StorageAccess.ReadOnly"/> files refuse every change, in the real storage and the simulated one, and leave the file as it was.</summary>
public class ReadOnlyStorageTests
{
    private static void AssertRefusesChanges(IStorage storage, string name, byte[] content)
    {
        using (var f = storage.Open(name, StorageOpenMode.OpenExisting, StorageAccess.ReadOnly))
        {
            var back = new byte[content.Length];
            Assert.Equal(content.Length, f.Read(0, back));
            Assert.Equal(content, back);
            Assert.Throws<NotSupportedException>(() => f.Write(0, new byte[] { 1, 2, 3 }));
            Assert.Throws<NotSupportedException>(() => f.Write(0, new ReadOnlyMemory<byte>[] { new byte[] { 1 } }));
            Assert.Throws<NotSupportedException>(() => f.SetLength(1));
            Assert.Throws<NotSupportedException>(() => f.Flush());
        }
        Assert.Throws<ArgumentException>(() => storage.Open(name + ".new", StorageOpenMode.CreateNew, StorageAccess.ReadOnly));
        Assert.False(storage.Exists(name + ".new"));
    }

    [Fact]
    public void A_read_only_real_file_refuses_writes_length_changes_and_flushes()
    {
        using var dir = new TempDir();
        var content = new byte[] { 10, 20, 30, 40, 50 };
        string path = Path.Combine(dir.Path, "f");
        File.WriteAllBytes(path, content);
        var mtime = File.GetLastWriteTimeUtc(path);
        AssertRefusesChanges(new FileStorage(dir.Path), "f", content);
        Assert.Equal(content, File.ReadAllBytes(path));
        Assert.Equal(mtime, File.GetLastWriteTimeUtc(path));
    }

    [Fact]
    public void A_read_only_sim_file_refuses_writes_length_changes_and_flushes_before_the_op_log_sees_them()
    {
        var content = new byte[] { 10, 20, 30, 40, 50 };
        var sim = SimStorage.FromFiles(new Dictionary<string, byte[]> { ["f"] = content });
        AssertRefusesChanges(sim, "f", content);
        Assert.Equal(content, sim.ReadAll("f"));
        Assert.Equal(0, sim.OpCount);
    }

    [Fact]
    public void A_missing_folder_is_not_created_when_asked_not_to()
    {
        using var dir = new TempDir();
        string missing = Path.Combine(dir.Path, "missing");
        Assert.Throws<DirectoryNotFoundException>(() => new FileStorage(missing, createIfMissing: false));
        Assert.False(Directory.Exists(missing));
    }
}
