// Where the app keeps its data and which model it starts with. Environment overrides (useful for
// tests, demos and portable setups):
//   WKVCHAT_DATA_DIR  folder of the conversation database (default: the platform's app data folder)
//   WKVCHAT_MODEL     model to load at startup, ahead of the saved setting "model/path"
//   WKVCHAT_MODELS_DIR  an extra folder searched first for bundled .wkvq models
// Without either, the bundled demo model (models/*.wkvq beside the executable, or
// <prefix>/share/wkvchat/models when installed) is used.
#pragma once

#include <QString>
#include <QStringList>

class ConversationStore;

namespace AppEnvironment {

QString dataDir();
QString databasePath();
// Folders searched for bundled models, in order.
QStringList bundledModelDirs();
// The first bundled .wkvq model, or "" when none is installed.
QString bundledModel();

struct StartupModel {
  QString path;    // "" = none: the user has to open one
  QString mode;    // "" = the model's default
  QString source;  // "environment", "settings", "bundled"
};
StartupModel startupModel(ConversationStore& store);

}  // namespace AppEnvironment
