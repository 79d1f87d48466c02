/*
 * The local file system of a pyspark installed from pip, without a process per file.
 *
 * pip's pyspark ships no native Hadoop library, so Hadoop's RawLocalFileSystem changes
 * permissions by running `chmod` in a new process for every file and folder it creates.
 * A table partitioned into thousands of folders (songs: year, artist_id) then spends
 * minutes forking. This file system sets the same permissions through java.nio instead,
 * and writes no .crc side files. It is used only when the job starts its own local JVM
 * (spark_etl.session); on EMR the cluster's own file systems are untouched.
 *
 * Rebuild the jar with `make local-fs-jar` after changing this file.
 */
package sparkify.hadoop;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.attribute.PosixFilePermissions;

import org.apache.hadoop.fs.LocalFileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.fs.RawLocalFileSystem;
import org.apache.hadoop.fs.permission.FsPermission;

public class FastLocalFileSystem extends LocalFileSystem {

  public FastLocalFileSystem() {
    super(new NioPermissionsRawLocalFileSystem());
    setWriteChecksum(false);
  }

  /** RawLocalFileSystem that sets permissions in-process. */
  public static class NioPermissionsRawLocalFileSystem extends RawLocalFileSystem {
    @Override
    public void setPermission(Path path, FsPermission permission) throws IOException {
      String symbolic = permission.getUserAction().SYMBOL
          + permission.getGroupAction().SYMBOL
          + permission.getOtherAction().SYMBOL;
      Files.setPosixFilePermissions(
          pathToFile(path).toPath(), PosixFilePermissions.fromString(symbolic));
    }
  }
}
