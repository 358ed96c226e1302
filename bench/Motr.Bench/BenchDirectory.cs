namespace Motr.Bench;

/// <summary>A fresh folder for one run's files (never inside the repository), deleted on dispose.</summary>
internal sealed class BenchDirectory : IDisposable
{
    private BenchDirectory(string path) => Path = path;

    public string Path { get; }

    /// <summary>Creates motr-bench-&lt;pid&gt;-&lt;random&gt; inside <paramref name="parent"/> (default: the temp folder).</summary>
    public static BenchDirectory Create(string? parent)
    {
        string root = parent ?? System.IO.Path.GetTempPath();
        Directory.CreateDirectory(root);
        string path = System.IO.Path.Combine(root, $"motr-bench-{Environment.ProcessId}-{Guid.NewGuid().ToString("N")[..8]}");
        Directory.CreateDirectory(path);
        return new BenchDirectory(path);
    }

    /// <summary>A new empty folder for one measured row.</summary>
    public string Sub(string name)
    {
        string p = System.IO.Path.Combine(Path, name);
        if (Directory.Exists(p)) Directory.Delete(p, recursive: true);
        Directory.CreateDirectory(p);
        return p;
    }

    /// <summary>Deletes a row's folder once it is done, so a long run does not pile up files.</summary>
    public static void Remove(string sub)
    {
        try { Directory.Delete(sub, recursive: true); }
        catch (IOException) { }
    }

    public void Dispose()
    {
        if (!Directory.Exists(Path)) return;
        try { Directory.Delete(Path, recursive: true); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Console.Error.WriteLine($"could not delete the bench folder {Path}: {e.Message}");
        }
    }
}
