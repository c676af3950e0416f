#include "AppEnvironment.h"

#include <QCoreApplication>
#include <QDir>
#include <QFileInfo>
#include <QStandardPaths>

#include "storage/ConversationStore.h"
#include "storage/StorageError.h"

namespace AppEnvironment {

QString dataDir() {
  const QString env = qEnvironmentVariable("WKVCHAT_DATA_DIR");
  if (!env.isEmpty()) return QDir(env).absolutePath();
  return QStandardPaths::writableLocation(QStandardPaths::AppDataLocation);
}

QString databasePath() { return QDir(dataDir()).filePath(QStringLiteral("wkvchat.sqlite3")); }

QStringList bundledModelDirs() {
  const QDir app(QCoreApplication::applicationDirPath());
  QStringList dirs = {app.filePath(QStringLiteral("models")), app.filePath(QStringLiteral("../share/wkvchat/models")),
                      QStringLiteral("/usr/share/wkvchat/models")};
  const QString extra = qEnvironmentVariable("WKVCHAT_MODELS_DIR");
  if (!extra.isEmpty()) dirs.prepend(extra);
  return dirs;
}

QString bundledModel() {
  for (const QString& dir : bundledModelDirs()) {
    const QFileInfoList files = QDir(dir).entryInfoList({QStringLiteral("*.wkvq")}, QDir::Files, QDir::Name);
    if (!files.isEmpty()) return files.first().canonicalFilePath();
  }
  return {};
}

StartupModel startupModel(ConversationStore& store) {
  StartupModel m;
  QString savedMode;
  QString savedPath;
  try {
    savedMode = store.setting(QStringLiteral("model/mode"));
    savedPath = store.setting(QStringLiteral("model/path"));
  } catch (const StorageError&) {
    // An unreadable settings table only costs the saved choice.
  }
  const QString env = qEnvironmentVariable("WKVCHAT_MODEL");
  if (!env.isEmpty()) {
    m.path = env;
    m.source = QStringLiteral("environment");
    m.mode = qEnvironmentVariable("WKVCHAT_MODE");
    return m;
  }
  if (!savedPath.isEmpty()) {
    m.path = savedPath;
    m.mode = savedMode;
    m.source = QStringLiteral("settings");
    return m;
  }
  m.path = bundledModel();
  m.source = m.path.isEmpty() ? QString() : QStringLiteral("bundled");
  return m;
}

}  // namespace AppEnvironment
